/**
 * Where to send a browser after sign-in. Only a same-origin relative path is accepted: never
 * `//host`, `/\host`, an absolute URL, or an encoded form of these (open redirects, RFC 9700 §4.11).
 * Anything else falls back to `/`.
 */
export function safeReturnPath(candidate: string | null | undefined, fallback = '/'): string {
  if (typeof candidate !== 'string' || candidate.length === 0 || candidate.length > 2048) return fallback
  // Must start with exactly one slash, followed by neither a slash nor a backslash.
  if (candidate.charCodeAt(0) !== 0x2f) return fallback
  const second = candidate.charCodeAt(1)
  if (second === 0x2f || second === 0x5c) return fallback
  // Control characters, spaces and backslashes anywhere: browsers strip or reinterpret them.
  for (let i = 0; i < candidate.length; i++) {
    const c = candidate.charCodeAt(i)
    if (c <= 0x20 || c === 0x7f || c === 0x5c) return fallback
  }
  // Encoded slashes, backslashes, control characters or dots at the start can be decoded by the
  // upstream or a browser into one of the forms above.
  let decoded: string
  try {
    decoded = decodeURIComponent(candidate)
  } catch {
    return fallback
  }
  if (decoded !== candidate) {
    const d2 = decoded.charCodeAt(1)
    if (d2 === 0x2f || d2 === 0x5c) return fallback
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
    if (/[\u0000-\u001f\u007f\\]/.test(decoded)) return fallback
  }
  // Resolve against a dummy origin: the result must stay on it and keep the same path.
  let url: URL
  try {
    url = new URL(candidate, 'http://gatehouse.invalid')
  } catch {
    return fallback
  }
  if (url.origin !== 'http://gatehouse.invalid') return fallback
  return url.pathname + url.search + url.hash
}
