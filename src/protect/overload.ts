import { monitorEventLoopDelay } from 'node:perf_hooks'

export interface OverloadMonitor {
  /** True while overloaded: shed what is cheapest to refuse. */
  isOverloaded(): boolean
  /** Requests being handled: the server counts each in when it starts and out when its answer ends. */
  inFlight: { enter(): void; leave(): void; readonly count: number }
  /** New thresholds from now on (a config reload); the requests counted in flight stay counted. */
  setLimits(options: { maxDelayMs: number; maxInFlight?: number }): void
  stop(): void
}

/**
 * Overloaded while the event loop's mean delay over the last half second exceeds `maxDelayMs`
 * (requests wait in line longer than they take), or while more than `maxInFlight` requests are being
 * handled at once (a slow upstream or provider holding many open; the event loop is then idle and its
 * delay says nothing). Shedding the cheapest-to-refuse traffic keeps the rest answered.
 */
export function createOverloadMonitor(options: {
  maxDelayMs: number
  maxInFlight?: number
}): OverloadMonitor {
  let maxDelayMs = options.maxDelayMs
  let maxInFlight = options.maxInFlight ?? Number.POSITIVE_INFINITY
  const histogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  let lagging = false
  let count = 0
  const timer = setInterval(() => {
    lagging = histogram.mean / 1e6 > maxDelayMs
    histogram.reset()
  }, 500)
  timer.unref()
  return {
    isOverloaded: () => lagging || count > maxInFlight,
    inFlight: {
      enter() {
        count++
      },
      leave() {
        count--
      },
      get count() {
        return count
      },
    },
    setLimits(next) {
      maxDelayMs = next.maxDelayMs
      maxInFlight = next.maxInFlight ?? Number.POSITIVE_INFINITY
    },
    stop() {
      clearInterval(timer)
      histogram.disable()
    },
  }
}
