/**
 * Revocation fan-out through a real Redis, between two token services on one real PostgreSQL: a
 * message on the channel is a hint confirmed in the store, so anyone able to PUBLISH cannot make a live
 * token refused nor fill an instance's memory.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Redis } from 'ioredis'
import {
  MAX_REVOKED_PER_MESSAGE,
  openRedisCoordinator,
  parseRevoked,
  type RedisCoordinator,
} from '../../src/coord/redis-coordinator.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createKeyRing } from '../../src/keys/key-ring.ts'
import { openPostgresStore, type PostgresStore } from '../../src/store/postgres-store.ts'
import { createTokenService, type TokenService } from '../../src/tokens/token-service.ts'
import {
  deleteRedisPrefix,
  dropSchema,
  POSTGRES_URL,
  postgresUnavailable,
  REDIS_URL,
  redisUnavailable,
  uniqueName,
} from '../helpers/shared-services.ts'

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())
const FAR = 2 ** 53 - 1
const DAY = 86_400

/** Polls `check` every 10 ms (pub/sub delivery is real time); fails after `withinMs`. */
async function within(withinMs: number, what: string, check: () => Promise<boolean>): Promise<void> {
  const start = performance.now()
  while (!(await check())) {
    if (performance.now() - start > withinMs) assert.fail(`${what}: not within ${withinMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('revocation messages on Redis are hints, confirmed in PostgreSQL', { skip }, () => {
  const schema = uniqueName('gh_revoke')
  const prefix = `${uniqueName('ghrevoke')}:`
  const clock = createFrozenClock(Date.UTC(2026, 0, 1))
  let store: PostgresStore
  let redisA: RedisCoordinator
  let redisB: RedisCoordinator
  let raw: Redis
  let a: TokenService
  let b: TokenService
  let resyncs = 0

  before(async () => {
    store = await openPostgresStore({ connection: POSTGRES_URL, schema, clock })
    const keyRing = await createKeyRing({
      store,
      clock,
      log: silentLogger,
      encryptionSecrets: ['at-rest secret for the revocation fan-out test'],
      signingPeriodSeconds: 30 * DAY,
      publishAheadSeconds: DAY,
      retentionSeconds: 31 * DAY,
    })
    redisA = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger })
    redisB = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger })
    const service = (onRevoked?: (e: Array<{ jti: string; expiresAt: number }>) => void) =>
      createTokenService({
        store,
        keyRing,
        clock,
        log: silentLogger,
        issuer: 'https://gatehouse.example',
        audience: 'https://api.example',
        lifetimes: {
          apiToken: { ttlSeconds: DAY, maxTtlSeconds: 30 * DAY },
          derivedToken: { ttlSeconds: 3600, maxTtlSeconds: DAY },
        },
        onRevoked,
      })
    a = service((entries) => void redisA.publishRevoked(entries))
    b = service()
    await b.refreshRevocations()
    // As app.ts wires it.
    await redisB.subscribeRevoked(
      (entries) => b.markRevoked(entries),
      async () => {
        resyncs++
        await b.refreshRevocations()
      },
    )
    raw = new Redis(REDIS_URL)
  })

  after(async () => {
    raw?.disconnect()
    await redisA?.close()
    await redisB?.close()
    await store?.close()
    await dropSchema(schema)
    await deleteRedisPrefix(prefix)
  })

  /** Revokes a fresh token on A and waits until B refuses it: every message published before has been read. */
  async function barrier(): Promise<void> {
    const { token, record } = await a.issue({ subject: 'barrier' })
    assert.equal((await b.verify(token)).ok, true)
    await a.revoke(record.jti, false)
    await within(1000, 'B refuses a token revoked on A', async () => !(await b.verify(token)).ok)
  }

  test('a token revoked on A is refused on B within a second', async () => {
    await barrier()
  })

  test('a forged message naming a live token does not make it refused', async () => {
    const { token, record } = await a.issue({ subject: 'victim' })
    assert.equal((await b.verify(token)).ok, true)
    const held = b.revokedCount()
    await raw.publish(`${prefix}revoked`, JSON.stringify({ i: 'attacker', r: [[record.jti, FAR]] }))
    await barrier()
    assert.equal((await b.verify(token)).ok, true, 'still accepted on B')
    assert.equal(b.revokedCount(), held + 1, 'only the barrier token was added')
  })

  test('a message with 200,000 made-up jtis changes nothing (a reload from the store instead)', async () => {
    const { token, record } = await a.issue({ subject: 'victim-2' })
    assert.equal((await b.verify(token)).ok, true)
    const held = b.revokedCount()
    const before = resyncs
    const r: Array<[string, number]> = Array.from({ length: 200_000 }, (_, i) => [`made-up-${i}`, FAR])
    r.push([record.jti, FAR])
    await raw.publish(`${prefix}revoked`, JSON.stringify({ i: 'attacker', r }))
    await barrier()
    assert.equal((await b.verify(token)).ok, true, 'still accepted on B')
    assert.equal(b.revokedCount(), held + 1, 'only the barrier token was added')
    assert.ok(resyncs > before, 'revocations reloaded from the store instead')
  })

  test('messages are read strictly', () => {
    const ok = { i: 'inst-1', r: [['abcDEF_-123', 1_800_000_000]] }
    assert.deepEqual(parseRevoked(JSON.stringify(ok)), [{ jti: 'abcDEF_-123', expiresAt: 1_800_000_000 }])
    for (const bad of [
      'not json',
      'null',
      '[]',
      JSON.stringify({ r: ok.r }),
      JSON.stringify({ ...ok, extra: 1 }),
      JSON.stringify({ ...ok, i: 'with space' }),
      JSON.stringify({ ...ok, r: {} }),
      JSON.stringify({ ...ok, r: [['j', 1, 'more']] }),
      JSON.stringify({ ...ok, r: [['', 1]] }),
      JSON.stringify({ ...ok, r: [['nul\u0000', 1]] }),
      JSON.stringify({ ...ok, r: [['x'.repeat(129), 1]] }),
      JSON.stringify({ ...ok, r: [['j', -1]] }),
      JSON.stringify({ ...ok, r: [['j', 1.5]] }),
      JSON.stringify({ ...ok, r: [['j', '1']] }),
    ]) {
      assert.equal(parseRevoked(bad), undefined, bad)
    }
    const many = Array.from({ length: MAX_REVOKED_PER_MESSAGE + 1 }, (_, i) => [`j${i}`, 1])
    assert.equal(parseRevoked(JSON.stringify({ ...ok, r: many })), 'oversized')
    assert.equal(parseRevoked('x'.repeat(1_000_000)), 'oversized')
    const most = Array.from({ length: MAX_REVOKED_PER_MESSAGE }, (_, i) => ['x'.repeat(120) + i, FAR])
    assert.equal((parseRevoked(JSON.stringify({ ...ok, r: most })) as unknown[]).length, 1000)
  })
})
