/**
 * Session revocations fan out exactly like token revocations (Gatehouse 8): through a real Redis, between
 * two session revocation lists on one real PostgreSQL; a message is a hint confirmed in the store.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Redis } from 'ioredis'
import {
  MAX_REVOKED_PER_MESSAGE,
  openRedisCoordinator,
  parseSessionsRevoked,
  type RedisCoordinator,
} from '../../src/coord/redis-coordinator.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import {
  createSessionRevocationList,
  type SessionRevocationList,
} from '../../src/core/session-revocations.ts'
import { openPostgresStore, type PostgresStore } from '../../src/store/postgres-store.ts'
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
const T = Date.UTC(2026, 0, 1)

/** Polls `check` every 10 ms (pub/sub delivery is real time); fails after `withinMs`. */
async function within(withinMs: number, what: string, check: () => boolean): Promise<void> {
  const start = performance.now()
  while (!check()) {
    if (performance.now() - start > withinMs) assert.fail(`${what}: not within ${withinMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

const session = (sid: string, sub = 'alice', signedInAt = T / 1000 - 60) => ({
  sid,
  identity: { sub },
  signedInAt,
})

describe('session revocation messages on Redis are hints, confirmed in PostgreSQL', { skip }, () => {
  const schema = uniqueName('gh_sessrev')
  const prefix = `${uniqueName('ghsessrev')}:`
  const clock = createFrozenClock(T)
  let store: PostgresStore
  let redisA: RedisCoordinator
  let redisB: RedisCoordinator
  let raw: Redis
  let a: SessionRevocationList
  let b: SessionRevocationList
  let resyncs = 0

  before(async () => {
    store = await openPostgresStore({ connection: POSTGRES_URL, schema, clock })
    redisA = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger })
    redisB = await openRedisCoordinator({ url: REDIS_URL, prefix, log: silentLogger })
    const list = (onRevoked?: Parameters<typeof createSessionRevocationList>[0]['onRevoked']) =>
      createSessionRevocationList({ store, clock, log: silentLogger, maxTtlSeconds: 86_400, onRevoked })
    // As services.ts and app.ts wire it.
    a = list((entries) => void redisA.publishSessionsRevoked(entries))
    b = list()
    await b.reload()
    await redisB.subscribeSessionsRevoked(
      (entries) => b.markRevoked(entries),
      async () => {
        resyncs++
        await b.reload()
      },
    )
    // Token revocations share the subscribed connection and still arrive.
    await redisB.subscribeRevoked(
      () => {},
      async () => {},
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

  let barriers = 0
  /** Signs a fresh session out on A and waits until B refuses it: every message published before was read. */
  async function barrier(): Promise<void> {
    const sid = `barrier-${++barriers}`
    await a.revoke([{ kind: 'sid', value: sid }])
    await within(1000, 'B refuses a session signed out on A', () => b.isRevoked(session(sid)))
  }

  test('a session signed out on A is refused on B within a second; sign out everywhere too', async () => {
    await barrier()
    assert.equal(b.isRevoked(session('s-x', 'bob')), false)
    await a.revoke([{ kind: 'sub', value: 'bob' }])
    await within(1000, 'B refuses every earlier session of bob', () => b.isRevoked(session('s-x', 'bob')))
    assert.equal(b.isRevoked(session('s-y', 'bob', T / 1000 + 1)), false, 'a later sign-in passes')
  })

  test('a forged message naming a live session does not make it refused', async () => {
    const held = b.size
    await raw.publish(
      `${prefix}sessions-revoked`,
      JSON.stringify({
        i: 'attacker',
        s: [
          ['sid', 'victim'],
          ['sub', 'carol'],
        ],
      }),
    )
    await barrier()
    assert.equal(b.isRevoked(session('victim', 'carol')), false)
    assert.equal(b.size, held + 1, 'only the barrier session was added')
  })

  test('a message naming 200,000 made-up sessions changes nothing (a reload from the store instead)', async () => {
    const held = b.size
    const before = resyncs
    const s = Array.from({ length: 200_000 }, (_, i) => ['sid', `made-up-${i}`])
    await raw.publish(`${prefix}sessions-revoked`, JSON.stringify({ i: 'attacker', s }))
    await barrier()
    assert.equal(b.size, held + 1, 'only the barrier session was added')
    assert.ok(resyncs > before, 'revocations reloaded from the store instead')
  })

  test('messages are read strictly', () => {
    const ok = {
      i: 'inst-1',
      s: [
        ['sid', 'abc'],
        ['sub', 'user@example.com'],
        ['psid', 'op-1'],
      ],
    }
    assert.deepEqual(parseSessionsRevoked(JSON.stringify(ok)), [
      { kind: 'sid', value: 'abc' },
      { kind: 'sub', value: 'user@example.com' },
      { kind: 'psid', value: 'op-1' },
    ])
    for (const bad of [
      'not json',
      '[]',
      JSON.stringify({ s: ok.s }),
      JSON.stringify({ ...ok, extra: 1 }),
      JSON.stringify({ ...ok, s: [['jti', 'x']] }),
      JSON.stringify({ ...ok, s: [['sid', '']] }),
      JSON.stringify({ ...ok, s: [['sid', 'with space']] }),
      JSON.stringify({ ...ok, s: [['sid', 'x'.repeat(256)]] }),
      JSON.stringify({ ...ok, s: [['sid', 'x', 1]] }),
      JSON.stringify({ ...ok, s: [['sid', 1]] }),
    ]) {
      assert.equal(parseSessionsRevoked(bad), undefined, bad)
    }
    const many = Array.from({ length: MAX_REVOKED_PER_MESSAGE + 1 }, (_, i) => ['sid', `s${i}`])
    assert.equal(parseSessionsRevoked(JSON.stringify({ ...ok, s: many })), 'oversized')
    const most = Array.from({ length: MAX_REVOKED_PER_MESSAGE }, (_, i) => ['psid', 'x'.repeat(250) + i])
    assert.equal((parseSessionsRevoked(JSON.stringify({ ...ok, s: most })) as unknown[]).length, 1000)
  })
})
