import type { Clock } from '../core/clock.ts'
import { ProviderUnavailableError } from '../core/errors.ts'

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface GuardOptions {
  clock: Clock
  /** Calls to the provider in flight at most; more fail at once (a bulkhead: a slow provider cannot hold every connection). */
  maxInFlight: number
  /** Consecutive failures (network error, timeout, 5xx) that open the breaker. */
  failureThreshold: number
  /** How long the breaker stays open before one trial call is let through. */
  openSeconds: number
}

export interface GuardStatus {
  state: BreakerState
  inFlight: number
  consecutiveFailures: number
  /** Seconds until a trial call is allowed, while open. */
  retryInSeconds: number | undefined
  /** Calls refused without reaching the provider (breaker open or bulkhead full). */
  shortCircuited: number
}

export interface GuardedFetch {
  fetch: typeof fetch
  status(): GuardStatus
}

/**
 * A circuit breaker and bulkhead around every call to the identity provider. After `failureThreshold`
 * consecutive failures the breaker opens: calls fail at once with ProviderUnavailableError (Gatehouse
 * answers from its caches) until `openSeconds` have passed, then one trial call decides. At most
 * `maxInFlight` calls run at once; more fail at once instead of piling up.
 */
export function createGuardedFetch(inner: typeof fetch, options: GuardOptions): GuardedFetch {
  const { clock } = options
  let state: BreakerState = 'closed'
  let openedAt = 0
  let failures = 0
  let inFlight = 0
  let trialInFlight = false
  let shortCircuited = 0

  function refuse(why: string): never {
    shortCircuited++
    throw new ProviderUnavailableError(`provider calls suspended: ${why}`)
  }

  function failed() {
    failures++
    if (state === 'half-open' || failures >= options.failureThreshold) {
      state = 'open'
      openedAt = clock.now()
    }
  }

  const guarded = (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    let trial = false
    if (state === 'open') {
      if (clock.now() - openedAt < options.openSeconds * 1000) refuse('circuit open after repeated failures')
      state = 'half-open'
    }
    if (state === 'half-open') {
      if (trialInFlight) refuse('circuit half-open, a trial call is in flight')
      trialInFlight = true
      trial = true
    }
    if (inFlight >= options.maxInFlight) {
      if (trial) trialInFlight = false
      refuse(`${inFlight} calls already in flight`)
    }
    inFlight++
    try {
      const response = await inner(input, init)
      if (response.status >= 500) failed()
      else {
        failures = 0
        state = 'closed'
      }
      return response
    } catch (err) {
      failed()
      throw err
    } finally {
      inFlight--
      if (trial) trialInFlight = false
    }
  }) as typeof fetch

  return {
    fetch: guarded,
    status: () => ({
      state,
      inFlight,
      consecutiveFailures: failures,
      retryInSeconds:
        state === 'open'
          ? Math.max(0, Math.ceil((openedAt + options.openSeconds * 1000 - clock.now()) / 1000))
          : undefined,
      shortCircuited,
    }),
  }
}
