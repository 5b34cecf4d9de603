/**
 * Cookie reading and writing for the few cookies Gatehouse owns. Reading is on the hot path, so it
 * looks for one name with `indexOf` instead of parsing the whole header.
 *
 * Reading, listing and stripping share one notion of where a cookie-pair starts and ends
 * (`atPairStart`, `pairEnd`), so a cookie Gatehouse reads is a cookie it strips before forwarding.
 * RFC 6265 §4.2.1 separates pairs with `; `; a `,` counts as a separator too: RFC 2965 used it, some
 * servers still split on it, and a fetch `Headers` object joins repeated Cookie fields with `, `.
 * (Gatehouse's own values never contain either.)
 */

function isSeparator(c: number): boolean {
  return c === 0x3b /* ; */ || c === 0x2c /* , */
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09
}

/** Whether a cookie name can start at `at`: the header's start, or after a separator and optional spaces. */
function atPairStart(header: string, at: number): boolean {
  let i = at
  while (i > 0 && isSpace(header.charCodeAt(i - 1))) i--
  return i === 0 || isSeparator(header.charCodeAt(i - 1))
}

/**
 * Index of the separator that ends the pair containing `from`, or the header's length. `indexOf`, not a
 * loop over characters: this runs on every request, over cookie values of a kilobyte or more.
 */
function pairEnd(header: string, from: number, hasComma: boolean): number {
  const semicolon = header.indexOf(';', from)
  const end = semicolon === -1 ? header.length : semicolon
  if (!hasComma) return end
  const comma = header.slice(from, end).indexOf(',')
  return comma === -1 ? end : from + comma
}

/** Value of cookie `name` in a Cookie header, or undefined. Only exact names at a cookie boundary match. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  const needle = name + '='
  let from = 0
  for (;;) {
    const at = header.indexOf(needle, from)
    if (at === -1) return undefined
    if (atPairStart(header, at)) {
      const start = at + needle.length
      return header.slice(start, pairEnd(header, start, header.includes(',', start)))
    }
    from = at + 1
  }
}

/** Every cookie name in the header that starts with `prefix`. */
export function cookieNamesWithPrefix(header: string | undefined, prefix: string): string[] {
  if (!header) return []
  const names: string[] = []
  const hasComma = header.includes(',')
  for (let start = 0; start < header.length; ) {
    const end = pairEnd(header, start, hasComma)
    const part = header.slice(start, end)
    const eq = part.indexOf('=')
    const name = (eq === -1 ? part : part.slice(0, eq)).trim()
    if (name.startsWith(prefix)) names.push(name)
    start = end + 1
  }
  return names
}

/**
 * The Cookie header without the cookies `isOwn` claims, so the upstream never sees Gatehouse's own
 * cookies. Undefined when nothing is left. `hint` is a substring every own cookie name starts with:
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
  const hasComma = header.includes(',')
  for (;;) {
    const at = header.indexOf(hint, from)
    if (at === -1) break
    from = at + 1
    if (!atPairStart(header, at)) continue
    const end = pairEnd(header, at, hasComma)
    const eq = header.indexOf('=', at)
    if (!isOwn(header.slice(at, eq === -1 || eq > end ? end : eq).trim())) continue
    if (end < header.length) {
      // Not the last cookie: drop it with its separator; the next one takes its place.
      out += header.slice(copyFrom, at)
      copyFrom = end + 1
      while (copyFrom < header.length && isSpace(header.charCodeAt(copyFrom))) copyFrom++
    } else {
      // The last cookie: drop it with the separator before it.
      out += header.slice(copyFrom, at)
      let trim = out.length
      while (trim > 0 && (isSpace(out.charCodeAt(trim - 1)) || isSeparator(out.charCodeAt(trim - 1)))) trim--
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
  /** Sent to this domain and every host under it (config `session.cookie_domain`); absent: host-only. */
  domain?: string | undefined
}

/** A Set-Cookie value. Always HttpOnly, host-only unless given a Domain, Path=/ unless told otherwise. */
export function serializeCookie(name: string, value: string, attrs: CookieAttributes): string {
  let out = `${name}=${value}; Path=${attrs.path ?? '/'}; HttpOnly; SameSite=${attrs.sameSite ?? 'Lax'}`
  if (attrs.domain !== undefined) out += `; Domain=${attrs.domain}`
  if (attrs.secure) out += '; Secure'
  if (attrs.maxAgeSeconds !== undefined) out += `; Max-Age=${Math.max(0, Math.floor(attrs.maxAgeSeconds))}`
  return out
}

/** A Set-Cookie value that deletes `name`, with the same attributes it was set with. */
export function clearCookie(name: string, attrs: Omit<CookieAttributes, 'maxAgeSeconds'>): string {
  return serializeCookie(name, '', { ...attrs, maxAgeSeconds: 0 })
}
