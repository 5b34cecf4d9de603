import assert from 'node:assert/strict'
import { afterEach, beforeEach, mock, test } from 'node:test'

// The port's contract (memory and Redis) is in test/contract/rate-limiter.test.ts; here, what only the
// memory limiter can show with a frozen clock: windows ending.
import { createRateLimiter } from '../../src/protect/rate-limits.ts'

// rate-limiter-flexible's memory store reads Date.now() and expires keys with setTimeout: both frozen.
beforeEach(() =>
  mock.timers.enable({ apis: ['Date', 'setTimeout'], now: Date.parse('2026-11-24T00:00:00Z') }),
)
afterEach(() => mock.timers.reset())

test('a limit lets `points` through per window and key, then refuses with Retry-After until the window ends', async () => {
  const limiter = createRateLimiter({
    client: { points: 3, perSeconds: 60 },
    credential: undefined,
    authEndpoint: undefined,
  })
  for (let i = 0; i < 3; i++) assert.deepEqual(await limiter.consume('client', '10.0.0.1'), { allowed: true })
  assert.deepEqual(await limiter.consume('client', '10.0.0.1'), { allowed: false, retryAfterSeconds: 60 })
  mock.timers.tick(45_000)
  assert.deepEqual(await limiter.consume('client', '10.0.0.1'), { allowed: false, retryAfterSeconds: 15 })
  // Another key has its own budget.
  assert.deepEqual(await limiter.consume('client', '10.0.0.2'), { allowed: true })
  mock.timers.tick(15_001)
  assert.deepEqual(await limiter.consume('client', '10.0.0.1'), { allowed: true }, 'the window ended')
})

test('Retry-After is at least one second, never zero', async () => {
  const limiter = createRateLimiter({
    client: { points: 1, perSeconds: 1 },
    credential: undefined,
    authEndpoint: undefined,
  })
  await limiter.consume('client', 'k')
  mock.timers.tick(999)
  assert.deepEqual(await limiter.consume('client', 'k'), { allowed: false, retryAfterSeconds: 1 })
})
