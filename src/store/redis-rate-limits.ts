import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import type { RedisCoordinator } from '../coord/redis-coordinator.ts'
import type { RateBucket, RateLimiter } from '../core/ports.ts'
import type { RateLimitsOptions } from '../protect/rate-limits.ts'

export interface SharedRateLimitsOptions extends RateLimitsOptions {
  redis: RedisCoordinator
  /** Called once each time a key goes over its limit in a window (audit: rate-limit ban). */
  onTripped?: ((bucket: RateBucket, key: string, retryAfterSeconds: number) => void) | undefined
}

const ALLOWED = Object.freeze({ allowed: true as const })

/**
 * The same limits as `createRateLimiter`, counted in Redis so that a limit is one limit across every
 * instance (fixed windows, one key per bucket and caller: nothing spans keys, so Redis Cluster works).
 * While Redis is unreachable each instance counts locally (rate-limiter-flexible's insurance limiter,
 * the same limits in memory): limits stay on, only per instance; `gatehouse_redis_fallback_total`
 * counts it and one log line says so.
 *
 * @example
 * ```ts
 * const limiter = createSharedRateLimiter({ redis, client: { points: 6000, perSeconds: 60 }, credential: undefined, authEndpoint: undefined })
 * ```
 */
export function createSharedRateLimiter(options: SharedRateLimitsOptions): RateLimiter {
  const { redis } = options
  const make = (name: string, l: RateLimitsOptions['client']) => {
    if (l === undefined) return undefined
    const insuranceLimiter = new RateLimiterMemory({
      keyPrefix: name,
      points: l.points,
      duration: l.perSeconds,
    })
    return new RateLimiterRedis({
      storeClient: redis.client,
      // rate-limiter-flexible adds ':' before the caller's key.
      keyPrefix: `${redis.prefix}rl:${name}`,
      points: l.points,
      duration: l.perSeconds,
      rejectIfRedisNotReady: true,
      insuranceLimiter,
    })
  }
  const limiters: Record<RateBucket, RateLimiterRedis | undefined> = {
    client: make('client', options.client),
    credential: make('credential', options.credential),
    auth_endpoint: make('auth', options.authEndpoint),
  }
  const points: Record<RateBucket, number> = {
    client: options.client?.points ?? 0,
    credential: options.credential?.points ?? 0,
    auth_endpoint: options.authEndpoint?.points ?? 0,
  }
  return {
    async consume(bucket, key) {
      const limiter = limiters[bucket]
      if (limiter === undefined) return ALLOWED
      if (!redis.isUp()) redis.fellBack('rate_limit')
      try {
        await limiter.consume(key)
        return ALLOWED
      } catch (err) {
        if (err instanceof RateLimiterRes) {
          const retryAfterSeconds = Math.max(1, Math.ceil(err.msBeforeNext / 1000))
          // The first refusal of a window is the moment the limit tripped.
          if (err.consumedPoints === points[bucket] + 1) options.onTripped?.(bucket, key, retryAfterSeconds)
          return { allowed: false, retryAfterSeconds }
        }
        throw err
      }
    },
  }
}
