/** The RateLimiter port's contract, in memory and on Redis; Redis also shares one count across instances. */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { openRedisCoordinator } from '../../src/coord/redis-coordinator.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createRateLimiter } from '../../src/protect/rate-limits.ts'
import { createSharedRateLimiter } from '../../src/store/redis-rate-limits.ts'
import { deleteRedisPrefix, REDIS_URL, redisUnavailable, uniqueName } from '../helpers/shared-services.ts'
import { rateLimiterContract } from './rate-limiter-contract.ts'

rateLimiterContract('memory', async (limits) => ({
  limiter: createRateLimiter(limits),
  close: async () => {},
}))

const skip = await redisUnavailable()
const prefixes: string[] = []
after(async () => {
  for (const p of prefixes) await deleteRedisPrefix(p)
})

async function onRedis(prefix: string) {
  return openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger, commandTimeoutMs: 5000 })
}

if (skip === undefined) {
  rateLimiterContract('redis', async (limits) => {
    const prefix = `${uniqueName('gh_test_rl')}:`
    prefixes.push(prefix)
    const redis = await onRedis(prefix)
    return { limiter: createSharedRateLimiter({ ...limits, redis }), close: () => redis.close() }
  })
}

describe('redis rate limits across instances', { skip }, () => {
  it('two instances count against one limit, and the trip is reported once', async () => {
    const prefix = `${uniqueName('gh_test_rl')}:`
    prefixes.push(prefix)
    const [a, b] = [await onRedis(prefix), await onRedis(prefix)]
    const tripped: string[] = []
    const limits = { client: { points: 4, perSeconds: 60 }, credential: undefined, authEndpoint: undefined }
    const onTripped = (bucket: string, key: string) => tripped.push(`${bucket} ${key}`)
    const onA = createSharedRateLimiter({ ...limits, redis: a, onTripped })
    const onB = createSharedRateLimiter({ ...limits, redis: b, onTripped })
    try {
      const answers = []
      for (let i = 0; i < 3; i++) {
        answers.push((await onA.consume('client', '203.0.113.9')).allowed)
        answers.push((await onB.consume('client', '203.0.113.9')).allowed)
      }
      assert.deepEqual(answers, [true, true, true, true, false, false], 'one limit of 4, not 4 each')
      assert.deepEqual(tripped, ['client 203.0.113.9'])
      const keys = await a.client.keys(`${prefix}*`)
      assert.deepEqual(keys, [`${prefix}rl:client:203.0.113.9`], 'one key per bucket and caller')
    } finally {
      await a.close()
      await b.close()
    }
  })
})
