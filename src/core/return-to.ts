const BASE = 'http://gatehouse.invalid'

/**
 * Where to send a browser after sign-in, sign-out or a refresh: the one check for every `Location`
 * built from a client's input (`rd`, `X-Forwarded-Uri`, the path a sign-in started from). Only a
 * same-origin relative path is accepted: never `//host`, `/\host`, an absolute URL, or a form that
 * becomes one once dot segments are resolved (`/.//host`, `/..//host`) or once decoded (`/%2F%2Fhost`)
 * (open redirects, RFC 9700 §4.11). The result is the path as resolved, so a browser resolving it again
 * lands on the same path. Anything else falls back to `fallback` (`/` by default).
 *
 * @example
 * safeReturnPath('/reports?q=1') // '/reports?q=1'
 * safeReturnPath('/.//evil.example') // '/'
 */
export function safeReturnPath(candidate: string | null | undefined, fallback = '/'): string {
  if (typeof candidate !== 'string' || candidate.length === 0 || candidate.length > 2048) return fallback
  if (!isOwnPath(candidate)) return fallback
  // Control characters, spaces and backslashes anywhere: browsers strip or reinterpret them.
  for (let i = 0; i < candidate.length; i++) {
    const c = candidate.charCodeAt(i)
    if (c <= 0x20 || c === 0x7f || c === 0x5c) return fallback
  }
  // Resolve against a dummy origin (dot segments, `%2e` ones included, as a browser does): the result must
  // stay on it, and must itself still be a path of this origin, after a decoding too.
  let url: URL
  try {
    url = new URL(candidate, BASE)
  } catch {
    return fallback
  }
  if (url.origin !== BASE) return fallback
  const resolved = url.pathname + url.search + url.hash
  if (!isOwnPath(resolved)) return fallback
  let decoded: string
  try {
    decoded = decodeURIComponent(resolved)
  } catch {
    return fallback
  }
  // An upstream or a browser that decodes once must not find `//host`, `/\host` or a control character.
  if (decoded !== resolved) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    if (!isOwnPath(decoded) || /[\u0000-\u001f\u007f\\]/.test(decoded)) return fallback
    const again = new URL(decoded, BASE)
    if (again.origin !== BASE || !isOwnPath(again.pathname)) return fallback
  }
  return resolved
}

/** Starts with exactly one `/`, followed by neither a `/` nor a `\`. */
function isOwnPath(path: string): boolean {
  if (path.charCodeAt(0) !== 0x2f) return false
  const second = path.charCodeAt(1)
  return second !== 0x2f && second !== 0x5c
}

/**
 * {@link safeReturnPath}, and also an absolute URL of one of `origins` (the app origins under a shared
 * cookie domain, where the central sign-in sends a browser back to): compared exactly, scheme, host and
 * port (no user info, no `\` in the authority, no control character), and returned as the URL parser
 * has it. Anything else falls back.
 *
 * @example
 * const apps = new Set(['https://wiki.example.com'])
 * safeReturnTo('https://wiki.example.com/a?b', apps) // 'https://wiki.example.com/a?b'
 * safeReturnTo('https://evil.example/a', apps) // '/'
 */
export function safeReturnTo(
  candidate: string | null | undefined,
  origins: ReadonlySet<string>,
  fallback = '/',
): string {
  if (typeof candidate !== 'string' || candidate.startsWith('/') || origins.size === 0)
    return safeReturnPath(candidate, fallback)
  // Scheme, `//` and an authority without `\` (which URL parsers read as `/`): nothing else is a URL here.
  if (candidate.length > 2048 || !/^https?:\/\/[^/?#\\]+(?:[/?#]|$)/i.test(candidate)) return fallback
  let url: URL
  try {
    url = new URL(candidate)
  } catch {
    return fallback
  }
  if (url.username !== '' || url.password !== '' || !origins.has(url.origin)) return fallback
  // Absolute, so no path can make it another origin's; control characters are refused as for a path.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u0020\u007f]/.test(candidate)) return fallback
  return url.origin + url.pathname + url.search + url.hash
}
