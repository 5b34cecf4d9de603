import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { RateLimiter } from '../../src/core/ports.ts'
import type { RateLimitsOptions } from '../../src/protect/rate-limits.ts'

/**
 * What every implementation of the RateLimiter port does (in memory, on Redis). Nothing here lets
 * time pass: window expiry is tested per implementation (a frozen clock in memory; Redis keeps its
 * own time).
 */
export function rateLimiterContract(
  name: string,
  open: (limits: RateLimitsOptions) => Promise<{ limiter: RateLimiter; close(): Promise<void> }>,
): void {
  describe(`${name}: rate limiter`, () => {
    it('lets `points` through per key, then refuses with a Retry-After inside the window', async () => {
      const { limiter, close } = await open({
        client: { points: 3, perSeconds: 60 },
        credential: undefined,
        authEndpoint: undefined,
      })
      try {
        for (let i = 0; i < 3; i++)
          assert.deepEqual(await limiter.consume('client', '10.0.0.1'), { allowed: true })
        const refused = await limiter.consume('client', '10.0.0.1')
        assert.equal(refused.allowed, false)
        if (!refused.allowed) {
          assert.ok(
            refused.retryAfterSeconds >= 1 && refused.retryAfterSeconds <= 60,
            String(refused.retryAfterSeconds),
          )
        }
        assert.deepEqual(await limiter.consume('client', '10.0.0.2'), { allowed: true }, 'another key')
      } finally {
        await close()
      }
    })

    it('keeps buckets apart, and a bucket without a limit never refuses', async () => {
      const { limiter, close } = await open({
        client: { points: 1, perSeconds: 10 },
        credential: { points: 2, perSeconds: 10 },
        authEndpoint: undefined,
      })
      try {
        assert.equal((await limiter.consume('client', 'k')).allowed, true)
        assert.equal((await limiter.consume('client', 'k')).allowed, false)
        assert.equal((await limiter.consume('credential', 'k')).allowed, true, 'same key, other bucket')
        assert.equal((await limiter.consume('credential', 'k')).allowed, true)
        assert.equal((await limiter.consume('credential', 'k')).allowed, false)
        for (let i = 0; i < 200; i++)
          assert.equal((await limiter.consume('auth_endpoint', 'k')).allowed, true)
      } finally {
        await close()
      }
    })

    it('counts keys exactly as given: no two keys share a count', async () => {
      const { limiter, close } = await open({
        client: { points: 1, perSeconds: 10 },
        credential: undefined,
        authEndpoint: undefined,
      })
      try {
        // Keys that a careless key scheme would merge (prefixes, separators, IPv6 colons).
        for (const key of ['a', 'a:', 'a:b', 'ab', '::1', '::1:', 'a b', 'A']) {
          assert.equal((await limiter.consume('client', key)).allowed, true, key)
        }
      } finally {
        await close()
      }
    })
  })
}
