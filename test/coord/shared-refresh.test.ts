/**
 * Refresh single-flight across instances, on a real Redis: two coordinators stand for two Gatehouse
 * processes. The provider is a counting function (what matters here is how often it is called).
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { openRedisCoordinator, type RedisCoordinator } from '../../src/coord/redis-coordinator.ts'
import { createSharedRefresh } from '../../src/coord/shared-refresh.ts'
import { ProviderRejectedError, ProviderUnavailableError } from '../../src/core/errors.ts'
import { silentLogger, type TokenResult } from '../../src/core/ports.ts'
import { deleteRedisPrefix, REDIS_URL, redisUnavailable, uniqueName } from '../helpers/shared-services.ts'

const skip = await redisUnavailable()

describe('shared refresh (Redis)', { skip }, () => {
  const prefix = `${uniqueName('gh_test_refresh')}:`
  let a: RedisCoordinator
  let b: RedisCoordinator

  before(async () => {
    // A generous command timeout: on a loaded test machine a slow answer would make an instance
    // refresh on its own (the fallback), which is not what these tests are about.
    a = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger, commandTimeoutMs: 5000 })
    b = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger, commandTimeoutMs: 5000 })
  })
  after(async () => {
    await a?.close()
    await b?.close()
    await deleteRedisPrefix(prefix)
  })

  function provider(answer: (rt: string) => Promise<TokenResult>) {
    const calls: string[] = []
    return {
      calls,
      refresh: async (rt: string) => {
        calls.push(rt)
        return answer(rt)
      },
    }
  }

  test('two instances refreshing one session at once: one provider call, both get its tokens', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const p = provider(async (rt) => {
      await gate
      return { accessToken: `at-for-${rt}`, accessTokenExpiresAt: 2_000_000_000, refreshToken: 'rotated' }
    })
    const onA = createSharedRefresh(p.refresh, { redis: a, log: silentLogger, pollMs: 5 })
    const onB = createSharedRefresh(p.refresh, { redis: b, log: silentLogger, pollMs: 5 })
    const first = onA('rt-1')
    // B starts while A holds the lock.
    for (let i = 0; i < 200 && p.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
    const second = onB('rt-1')
    release()
    const [ra, rb] = await Promise.all([first, second])
    assert.deepEqual(p.calls, ['rt-1'])
    assert.deepEqual(ra, rb)
    assert.equal(rb.refreshToken, 'rotated')
    // A request still carrying the old cookie, on either instance, reuses the result too.
    assert.deepEqual(await onB('rt-1'), ra)
    assert.deepEqual(p.calls, ['rt-1'])
  })

  test('an instance whose first look came just before the winner left its result does not refresh again', async () => {
    const p = provider(async () => ({
      accessToken: 'at-race',
      accessTokenExpiresAt: 2_000_000_000,
      refreshToken: 'rt-next',
    }))
    // A refreshes, leaves its result and frees the lock.
    await createSharedRefresh(p.refresh, { redis: a, log: silentLogger })('rt-race')
    // B's first GET was answered before A's result was written (Redis ordered it so): it sees nothing,
    // then takes the lock A has just freed.
    let first = true
    const client = new Proxy(b.client, {
      get(target, prop, receiver) {
        if (prop === 'get' && first) {
          first = false
          return async () => null
        }
        const v = Reflect.get(target, prop, receiver)
        return typeof v === 'function' ? v.bind(target) : v
      },
    })
    const r = await createSharedRefresh(p.refresh, { redis: { ...b, client }, log: silentLogger })('rt-race')
    assert.equal(r.accessToken, 'at-race')
    assert.deepEqual(p.calls, ['rt-race'], 'the rotated refresh token was not presented again')
    assert.deepEqual(await a.client.keys(`${prefix}*lock`), [], 'the lock taken for nothing was released')
  })

  test('the result is sealed: Redis holds no token in the clear', async () => {
    const p = provider(async () => ({
      accessToken: 'very-secret-access-token',
      accessTokenExpiresAt: 2_000_000_000,
    }))
    await createSharedRefresh(p.refresh, { redis: a, log: silentLogger })('rt-sealed')
    const keys = await a.client.keys(`${prefix}*`)
    assert.ok(keys.length > 0)
    for (const key of keys) {
      const value = (await a.client.get(key)) ?? ''
      assert.doesNotMatch(value, /very-secret-access-token|rt-sealed/)
    }
    // Hash-tagged: lock and result of one refresh token share a Redis Cluster slot.
    assert.ok(
      keys.every((k) => /\{rf:[A-Za-z0-9_-]{43}\}:(lock|result)$/.test(k)),
      keys.join(', '),
    )
  })

  test('a refusal (invalid_grant) is shared; an outage is not', async () => {
    const refused = provider(async () => {
      throw new ProviderRejectedError('invalid_grant', 'grant revoked')
    })
    await assert.rejects(createSharedRefresh(refused.refresh, { redis: a, log: silentLogger })('rt-gone'), {
      oauthError: 'invalid_grant',
    })
    await assert.rejects(createSharedRefresh(refused.refresh, { redis: b, log: silentLogger })('rt-gone'), {
      oauthError: 'invalid_grant',
    })
    assert.equal(refused.calls.length, 1, 'B reused the refusal')

    let down = true
    const flaky = provider(async () => {
      if (down) throw new ProviderUnavailableError('timed out')
      return { accessToken: 'at', accessTokenExpiresAt: 2_000_000_000 }
    })
    await assert.rejects(
      createSharedRefresh(flaky.refresh, { redis: a, log: silentLogger })('rt-flaky'),
      ProviderUnavailableError,
    )
    down = false
    const r = await createSharedRefresh(flaky.refresh, { redis: b, log: silentLogger })('rt-flaky')
    assert.equal(r.accessToken, 'at')
    assert.equal(flaky.calls.length, 2, 'after an outage the next instance tries again')
  })

  test('another session never reads this one’s result', async () => {
    const p = provider(async (rt) => ({ accessToken: `at-${rt}`, accessTokenExpiresAt: 2_000_000_000 }))
    const shared = createSharedRefresh(p.refresh, { redis: a, log: silentLogger })
    assert.equal((await shared('rt-x')).accessToken, 'at-rt-x')
    assert.equal((await shared('rt-y')).accessToken, 'at-rt-y')
    assert.deepEqual(p.calls, ['rt-x', 'rt-y'])
  })
})
