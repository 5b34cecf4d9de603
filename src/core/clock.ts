/** The clock is a port: production reads the system time, tests freeze it and jump ahead. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** A clock that only moves when told to. */
export function createFrozenClock(startMs = Date.UTC(2026, 0, 1)): Clock & {
  advance(ms: number): void
  set(ms: number): void
} {
  let t = startMs
  return {
    now: () => t,
    advance(ms: number) {
      t += ms
    },
    set(ms: number) {
      t = ms
    },
  }
}
