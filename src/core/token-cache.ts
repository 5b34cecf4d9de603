/**
 * A bounded map from exact token strings to what verifying them established. Keyed by the token's
 * last 32 characters (the signature or authentication tag: unique per token, and cheap to hash where
 * a whole 0.3–3 KB token is not); a hit still compares the whole token. Bounded in entries and, with
 * `maxBytes`, in the characters of the tokens it holds: when either is full, the oldest entries go
 * (Maps iterate in insertion order). A token longer than `maxBytes` alone is not kept.
 */
export interface TokenCache<V> {
  get(token: string): V | undefined
  set(token: string, value: V): void
  delete(token: string): void
  readonly size: number
  /** Characters of the tokens held. */
  readonly bytes: number
}

const TAIL = 32

export function createTokenCache<V>(maxEntries: number, options: { maxBytes?: number } = {}): TokenCache<V> {
  if (!(Number.isInteger(maxEntries) && maxEntries > 0))
    throw new TypeError('token cache: maxEntries must be a positive integer')
  const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY
  if (!(maxBytes > 0)) throw new TypeError('token cache: maxBytes must be positive')
  const map = new Map<string, { token: string; value: V }>()
  let bytes = 0
  const keyOf = (token: string) => token.slice(-TAIL)
  function remove(key: string) {
    const entry = map.get(key)
    if (entry === undefined) return
    bytes -= entry.token.length
    map.delete(key)
  }
  return {
    get(token) {
      const hit = map.get(keyOf(token))
      return hit !== undefined && hit.token === token ? hit.value : undefined
    },
    set(token, value) {
      if (token.length > maxBytes) return
      const key = keyOf(token)
      remove(key)
      while (map.size > 0 && (map.size >= maxEntries || bytes + token.length > maxBytes)) {
        remove(map.keys().next().value!)
      }
      map.set(key, { token, value })
      bytes += token.length
    },
    delete(token) {
      const key = keyOf(token)
      if (map.get(key)?.token === token) remove(key)
    },
    get size() {
      return map.size
    },
    get bytes() {
      return bytes
    },
  }
}
