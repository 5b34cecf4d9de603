import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible'
import type { RateBucket, RateLimiter } from '../core/ports.ts'

type Limit = { points: number; perSeconds: number } | undefined

export interface RateLimitsOptions {
  /** Requests per client address per window; undefined: no limit. */
  client: Limit
  /** Requests per session (or token subject) per window. */
  credential: Limit
  /** Sign-in, callback and refresh per client address per window: the endpoints that call the provider. */
  authEndpoint: Limit
}

const ALLOWED = Object.freeze({ allowed: true as const })

/**
 * In-process rate limits on rate-limiter-flexible (fixed windows in memory). Gatehouse 6 puts the same
 * port on Redis so that a limit is one limit across instances.
 */
export function createRateLimiter(options: RateLimitsOptions): RateLimiter {
  const make = (keyPrefix: string, l: Limit) =>
    l === undefined
      ? undefined
      : new RateLimiterMemory({ keyPrefix, points: l.points, duration: l.perSeconds })
  const limiters: Record<RateBucket, RateLimiterMemory | undefined> = {
    client: make('client', options.client),
    credential: make('credential', options.credential),
    auth_endpoint: make('auth', options.authEndpoint),
  }
  return {
    async consume(bucket, key) {
      const limiter = limiters[bucket]
      if (limiter === undefined) return ALLOWED
      try {
        await limiter.consume(key)
        return ALLOWED
      } catch (err) {
        if (err instanceof RateLimiterRes) {
          return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(err.msBeforeNext / 1000)) }
        }
        throw err
      }
    },
  }
}
