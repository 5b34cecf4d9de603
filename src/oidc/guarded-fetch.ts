import type { Clock } from '../core/clock.ts'
import { ProviderBusyError, ProviderUnavailableError } from '../core/errors.ts'

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface GuardOptions {
  clock: Clock
  /** Calls to the provider in flight at most (a bulkhead: a slow provider cannot hold every connection). */
  maxInFlight: number
  /** Calls that may wait for a free slot; more fail at once with ProviderBusyError. Default 64. */
  maxQueued?: number
  /** How long a call may wait for a slot before failing with ProviderBusyError. Default 2000 ms. */
  queueTimeoutMs?: number
  /**
   * The callers' own deadline for a call (config `provider.timeout`), which starts before the call waits
   * in line. A call aborted by its caller after less than half of it with the provider says nothing about
   * the provider (it spent its time in our queue) and does not count towards the breaker.
   */
  callTimeoutMs?: number
  /** Consecutive failures (network error, timeout, 5xx) that open the breaker. */
  failureThreshold: number
  /** How long the breaker stays open before one trial call is let through. */
  openSeconds: number
}

export interface GuardStatus {
  state: BreakerState
  inFlight: number
  /** Calls waiting for a slot. */
  queued: number
  consecutiveFailures: number
  /** Seconds until a trial call is allowed, while open. */
  retryInSeconds: number | undefined
  /** Calls refused without reaching the provider (breaker open, queue full or its deadline passed). */
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
 * `maxInFlight` calls run at once; up to `maxQueued` more wait, each for at most `queueTimeoutMs`, and
 * the rest fail at once with ProviderBusyError instead of piling up (seed 003).
 */
export function createGuardedFetch(inner: typeof fetch, options: GuardOptions): GuardedFetch {
  const { clock } = options
  let state: BreakerState = 'closed'
  let openedAt = 0
  let failures = 0
  let inFlight = 0
  let trialInFlight = false
  let shortCircuited = 0
  const maxQueued = options.maxQueued ?? 64
  const queueTimeoutMs = options.queueTimeoutMs ?? 2000
  // Waiting calls, oldest first; each is woken with a slot handed over, or times out and leaves.
  const queue: Array<{ wake(): void }> = []
  const retryAfterSeconds = Math.max(1, Math.ceil(queueTimeoutMs / 1000))

  function busy(why: string): never {
    shortCircuited++
    throw new ProviderBusyError(`provider calls capped: ${why}`, retryAfterSeconds)
  }

  /**
   * A slot: at once when one is free, else after waiting in line (bounded in length and time). A
   * caller that gives up (its signal aborts) while waiting leaves the line; that is not the provider
   * failing, so it never counts towards the breaker.
   */
  async function acquire(signal: AbortSignal | null | undefined): Promise<void> {
    signal?.throwIfAborted()
    if (inFlight < options.maxInFlight) {
      inFlight++
      return
    }
    if (queue.length >= maxQueued) busy(`${inFlight} in flight and ${queue.length} waiting`)
    await new Promise<void>((resolve, reject) => {
      const leave = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const i = queue.indexOf(entry)
        if (i !== -1) queue.splice(i, 1)
      }
      const entry = {
        wake() {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
      }
      const onAbort = () => {
        leave()
        reject(signal!.reason)
      }
      const timer = setTimeout(() => {
        leave()
        shortCircuited++
        reject(
          new ProviderBusyError(
            `provider calls capped: waited ${queueTimeoutMs} ms for a slot`,
            retryAfterSeconds,
          ),
        )
      }, queueTimeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      queue.push(entry)
    })
  }

  /** Hand the slot to the oldest waiting call, or free it. */
  function release() {
    const next = queue.shift()
    if (next !== undefined) next.wake()
    else inFlight--
  }

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
      // A clock that stepped back past the opening does not keep the breaker open for that long.
      const openForMs = clock.now() - openedAt
      if (openForMs >= 0 && openForMs < options.openSeconds * 1000)
        refuse('circuit open after repeated failures')
      state = 'half-open'
    }
    if (state === 'half-open') {
      if (trialInFlight) refuse('circuit half-open, a trial call is in flight')
      trialInFlight = true
      trial = true
    }
    try {
      await acquire(init?.signal)
    } catch (err) {
      if (trial) trialInFlight = false
      throw err
    }
    if ((state as BreakerState) === 'open' && !trial) {
      // The breaker opened while this call waited for its slot.
      release()
      refuse('circuit open after repeated failures')
    }
    if (init?.signal?.aborted) {
      // The caller gave up while this call waited (its slot was handed over just then): not a failure.
      release()
      if (trial) trialInFlight = false
      throw init.signal.reason
    }
    const startedAt = performance.now()
    try {
      const response = await inner(input, init)
      if (response.status >= 500) failed()
      else {
        failures = 0
        state = 'closed'
      }
      return response
    } catch (err) {
      const callerGaveUpEarly =
        init?.signal?.aborted === true &&
        options.callTimeoutMs !== undefined &&
        performance.now() - startedAt < options.callTimeoutMs / 2
      if (!callerGaveUpEarly) failed()
      throw err
    } finally {
      release()
      if (trial) trialInFlight = false
    }
  }) as typeof fetch

  return {
    fetch: guarded,
    status: () => ({
      state,
      inFlight,
      queued: queue.length,
      consecutiveFailures: failures,
      retryInSeconds:
        state === 'open'
          ? Math.max(0, Math.ceil((openedAt + options.openSeconds * 1000 - clock.now()) / 1000))
          : undefined,
      shortCircuited,
    }),
  }
}
