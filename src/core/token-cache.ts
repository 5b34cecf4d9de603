/**
 * A bounded map from exact token strings to what verifying them established. Keyed by the token's
 * last 32 characters (the signature or authentication tag: unique per token, and cheap to hash where
 * a whole 0.3–3 KB token is not); a hit still compares the whole token. When full, the oldest entry
 * goes (Maps iterate in insertion order).
 */
export interface TokenCache<V> {
  get(token: string): V | undefined
  set(token: string, value: V): void
  delete(token: string): void
  readonly size: number
}

const TAIL = 32

export function createTokenCache<V>(maxEntries: number): TokenCache<V> {
  if (!(Number.isInteger(maxEntries) && maxEntries > 0))
    throw new TypeError('token cache: maxEntries must be a positive integer')
  const map = new Map<string, { token: string; value: V }>()
  const keyOf = (token: string) => token.slice(-TAIL)
  return {
    get(token) {
      const hit = map.get(keyOf(token))
      return hit !== undefined && hit.token === token ? hit.value : undefined
    },
    set(token, value) {
      const key = keyOf(token)
      if (!map.has(key) && map.size >= maxEntries) {
        const oldest = map.keys().next().value
        if (oldest !== undefined) map.delete(oldest)
      }
      map.set(key, { token, value })
    },
    delete(token) {
      const key = keyOf(token)
      if (map.get(key)?.token === token) map.delete(key)
    },
    get size() {
      return map.size
    },
  }
}
