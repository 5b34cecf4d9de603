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
  // Visit only the places where `hint` occurs at the start of a cookie name, and cut those cookies
  // out; the rest of the header is copied in as few slices as possible.
  let out = ''
  let copyFrom = 0
  let from = 0
  for (;;) {
    const at = header.indexOf(hint, from)
    if (at === -1) break
    from = at + 1
    let start = at
    while (start > 0 && header.charCodeAt(start - 1) === 0x20) start--
    if (start !== 0 && header.charCodeAt(start - 1) !== 0x3b) continue
    const eq = header.indexOf('=', at)
    let end = header.indexOf(';', at)
    if (end === -1) end = header.length
    if (!isOwn(header.slice(at, eq === -1 || eq > end ? end : eq).trim())) continue
    if (end < header.length) {
      // Not the last cookie: drop it with its separator; the next one takes its place.
      out += header.slice(copyFrom, at)
      copyFrom = end + 1
      while (copyFrom < header.length && header.charCodeAt(copyFrom) === 0x20) copyFrom++
    } else {
      // The last cookie: drop it with the separator before it.
      out += header.slice(copyFrom, Math.max(copyFrom, start))
      let trim = out.length
      while (trim > 0 && (out.charCodeAt(trim - 1) === 0x20 || out.charCodeAt(trim - 1) === 0x3b)) trim--
      out = out.slice(0, trim)
      copyFrom = header.length
    }
    from = copyFrom
  }
  if (copyFrom === 0) return header
  out += header.slice(copyFrom)
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
