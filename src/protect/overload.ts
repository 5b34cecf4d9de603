import { monitorEventLoopDelay } from 'node:perf_hooks'

/**
 * Overloaded while the event loop's mean delay over the last half second exceeds `maxDelayMs`:
 * requests then wait in line longer than they take, and shedding the cheapest-to-refuse traffic
 * keeps the rest answered.
 */
export function createOverloadMonitor(maxDelayMs: number): { isOverloaded(): boolean; stop(): void } {
  const histogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  let overloaded = false
  const timer = setInterval(() => {
    overloaded = histogram.mean / 1e6 > maxDelayMs
    histogram.reset()
  }, 500)
  timer.unref()
  return {
    isOverloaded: () => overloaded,
    stop() {
      clearInterval(timer)
      histogram.disable()
    },
  }
}
