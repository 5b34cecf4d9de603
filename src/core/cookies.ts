/**
 * Cookie reading and writing for the few cookies Gatehouse owns. Reading is on the hot path, so it
 * looks for one name with `indexOf` instead of parsing the whole header.
 */

/** Value of cookie `name` in a Cookie header, or undefined. Only exact names at a cookie boundary match. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  const needle = name + '='
  let from = 0
  for (;;) {
    const at = header.indexOf(needle, from)
    if (at === -1) return undefined
    // RFC 6265 §4.2.1: cookie-pairs are separated by "; " (tolerate ";" without the space)
    if (at === 0 || header.charCodeAt(at - 1) === 0x20 || header.charCodeAt(at - 1) === 0x3b) {
      const start = at + needle.length
      const end = header.indexOf(';', start)
      return end === -1 ? header.slice(start) : header.slice(start, end)
    }
    from = at + 1
  }
}

/** Every cookie name in the header that starts with `prefix`. */
export function cookieNamesWithPrefix(header: string | undefined, prefix: string): string[] {
  if (!header) return []
  const names: string[] = []
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    const name = (eq === -1 ? part : part.slice(0, eq)).trim()
    if (name.startsWith(prefix)) names.push(name)
  }
  return names
}

/**
 * The Cookie header without the cookies `isOwn` claims, so the upstream never sees Gatehouse's own
 * cookies. Undefined when nothing is left. `hint` is a substring every own cookie name contains:
 * when the header lacks it, the header is returned untouched without being split.
 */
export function stripCookies(
  header: string | undefined,
  hint: string,
  isOwn: (name: string) => boolean,
): string | undefined {
  if (!header?.includes(hint)) return header
  // One pass over the header, copying the spans of cookies that are not ours.
  let out = ''
  let start = 0
  const n = header.length
  while (start < n) {
    while (start < n && (header.charCodeAt(start) === 0x20 || header.charCodeAt(start) === 0x3b)) start++
    if (start >= n) break
    let end = header.indexOf(';', start)
    if (end === -1) end = n
    const eq = header.indexOf('=', start)
    const name = header.slice(start, eq === -1 || eq > end ? end : eq).trim()
    if (!isOwn(name)) {
      const pair = header.slice(start, end).trim()
      out = out === '' ? pair : `${out}; ${pair}`
    }
    start = end + 1
  }
  return out === '' ? undefined : out
}

export interface CookieAttributes {
  secure: boolean
  /** Seconds; 0 deletes the cookie. Omitted: a browser-session cookie. */
  maxAgeSeconds?: number
  sameSite?: 'Lax' | 'Strict' | 'None'
  path?: string
}

/** A Set-Cookie value. Always HttpOnly and host-only (no Domain), Path=/ unless told otherwise. */
export function serializeCookie(name: string, value: string, attrs: CookieAttributes): string {
  let out = `${name}=${value}; Path=${attrs.path ?? '/'}; HttpOnly; SameSite=${attrs.sameSite ?? 'Lax'}`
  if (attrs.secure) out += '; Secure'
  if (attrs.maxAgeSeconds !== undefined) out += `; Max-Age=${Math.max(0, Math.floor(attrs.maxAgeSeconds))}`
  return out
}

/** A Set-Cookie value that deletes `name`, with the same attributes it was set with. */
export function clearCookie(name: string, attrs: Omit<CookieAttributes, 'maxAgeSeconds'>): string {
  return serializeCookie(name, '', { ...attrs, maxAgeSeconds: 0 })
}
