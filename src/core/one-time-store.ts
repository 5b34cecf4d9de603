import type { Clock } from './clock.ts'
import type { OneTimeStore } from './ports.ts'

/**
 * In-process one-time store, bounded: expired keys are pruned as new ones arrive, and when full the
 * oldest entry is dropped (a dropped `state` is one whose cookie has long expired in practice, since
 * entries live only for the state lifetime).
 */
export function createMemoryOneTimeStore(clock: Clock, maxEntries = 100_000): OneTimeStore {
  const seen = new Map<string, number>()
  return {
    async consume(key, expiresAtMs) {
      const now = clock.now()
      const prior = seen.get(key)
      if (prior !== undefined && prior > now) return false
      if (seen.size >= maxEntries) {
        for (const [k, exp] of seen) {
          if (exp <= now || seen.size >= maxEntries) seen.delete(k)
          else break
        }
      }
      seen.set(key, expiresAtMs)
      return true
    },
  }
}
