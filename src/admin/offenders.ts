/**
 * The clients refused most for their behaviour (rate limits, sign-in loops), with their User-Agent:
 * in seed 003 the culprit was one client version. Bounded: at most `maxEntries` are tracked; when
 * full, the least refused one makes room.
 */
export interface Offender {
  clientAddress: string
  userAgent: string
  code: string
  count: number
  lastSeen: string
}

export function createOffenders(now: () => number, maxEntries = 1000) {
  const seen = new Map<string, Offender>()
  return {
    record(code: string, clientAddress: string, userAgent: string | undefined) {
      const ua = (userAgent ?? '').slice(0, 200)
      const key = `${code}\u0000${clientAddress}\u0000${ua}`
      const hit = seen.get(key)
      const lastSeen = new Date(now()).toISOString()
      if (hit !== undefined) {
        hit.count++
        hit.lastSeen = lastSeen
        return
      }
      if (seen.size >= maxEntries) {
        let smallest: string | undefined
        let min = Number.POSITIVE_INFINITY
        for (const [k, v] of seen) {
          if (v.count < min) {
            min = v.count
            smallest = k
          }
        }
        if (smallest !== undefined) seen.delete(smallest)
      }
      seen.set(key, { clientAddress, userAgent: ua, code, count: 1, lastSeen })
    },
    top(n = 10): Offender[] {
      return [...seen.values()]
        .sort((a, b) => b.count - a.count)
        .slice(0, n)
        .map((o) => ({ ...o }))
    },
  }
}
