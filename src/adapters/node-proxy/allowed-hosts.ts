import { isIP } from 'node:net'

// RFC 9110 §7.2: Host is uri-host [ ":" port ]; a name here is letters, digits, dots, hyphens, underscores.
const HOST = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::\d{1,5})?$/

/**
 * The host name in a `Host` header value: lower-case, without the port or a trailing dot; an IPv6 literal
 * without its brackets. `undefined` when the value is not a host at all.
 */
export function hostnameOf(host: string): string | undefined {
  const m = HOST.exec(host)
  if (m === null) return undefined
  if (m[1] !== undefined) return isIP(m[1]) === 6 ? m[1].toLowerCase() : undefined
  const name = m[2]!.toLowerCase()
  return name.endsWith('.') ? name.slice(0, -1) : name
}

/**
 * Which `Host` values a server answers for: `names` (exact, or `.example.com` for that domain and every
 * name under it), and always IP literals and `localhost`. Those cannot be a DNS rebinding: a page that
 * rebinds its own name to this server's address still makes the browser send that name. A request
 * without `Host` (HTTP/1.0) passes; Node refuses an HTTP/1.1 one.
 *
 * @example
 * ```ts
 * const allowed = createHostCheck(['app.example.com', '.internal.example'])
 * allowed('APP.example.com:443') // true
 * allowed('evil.example') // false
 * ```
 */
export function createHostCheck(names: readonly string[]): (host: string | undefined) => boolean {
  const exact = new Set<string>(['localhost'])
  const suffixes: string[] = []
  for (const entry of names) {
    const lower = entry.toLowerCase()
    if (isIP(lower.replace(/^\[|\]$/g, '')) !== 0) continue
    const name = hostnameOf(lower.startsWith('.') ? lower.slice(1) : lower)
    if (name === undefined || name === '' || lower.includes(':')) {
      throw new TypeError(
        `allowed hosts: expected a host name such as app.example.com, got ${JSON.stringify(entry)}`,
      )
    }
    exact.add(name)
    if (lower.startsWith('.')) suffixes.push(`.${name}`)
  }
  return function isAllowedHost(host) {
    if (host === undefined) return true
    const name = hostnameOf(host)
    if (name === undefined) return false
    if (exact.has(name) || isIP(name) !== 0) return true
    for (const suffix of suffixes) if (name.endsWith(suffix)) return true
    return false
  }
}
