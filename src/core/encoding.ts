const encoder = new TextEncoder()

export function utf8(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text)
}

export function base64url(bytes: Uint8Array): string {
  let s = ''
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

// Value of each base64url character (RFC 4648 §5), -1 for anything else.
const BASE64URL_VALUE = (() => {
  const table = new Int8Array(128).fill(-1)
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i
  return table
})()

/**
 * Whether `text` is the one canonical unpadded base64url spelling of its bytes: only the alphabet, a
 * length that is not 1 mod 4, and the unused low bits of the last character zero (RFC 4648 §3.5).
 * Decoders ignore those bits, so `…Q` and `…R` decode alike; caches keyed by the exact token string
 * (verified tokens, refused tokens, sessions) must not let each such sibling cost a fresh verification.
 */
export function isCanonicalBase64url(text: string): boolean {
  const n = text.length
  const rest = n % 4
  if (rest === 1) return false
  let last = 0
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    last = c < 128 ? BASE64URL_VALUE[c]! : -1
    if (last === -1) return false
  }
  // 2 characters carry one byte (4 spare bits), 3 carry two (2 spare bits).
  if (rest === 2) return (last & 0x0f) === 0
  if (rest === 3) return (last & 0x03) === 0
  return true
}

/**
 * Whether `token` is a compact JWS (3 parts) or JWE (5 parts) serialisation whose every part is canonical
 * base64url (an empty part is: JWE `dir` has no encrypted key). Checked before any crypto.
 */
export function isCanonicalCompact(token: string, parts: 3 | 5): boolean {
  let count = 0
  let start = 0
  for (;;) {
    const dot = token.indexOf('.', start)
    const end = dot === -1 ? token.length : dot
    if (!isCanonicalBase64url(token.slice(start, end))) return false
    count++
    if (dot === -1) break
    start = dot + 1
  }
  return count === parts
}

export function randomToken(byteLength = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(byteLength)))
}

export async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(text)))
}

/** Constant-time comparison of two strings (length is not hidden; every value compared here has a fixed length). */
export function timingSafeEqualString(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;')
}
