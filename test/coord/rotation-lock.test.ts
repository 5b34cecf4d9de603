/**
 * The key schedule's advisory lock on a real PostgreSQL: every wait for it is bounded, and waiting never
 * holds a pool connection, so a session that keeps the lock forever (a stalled or partitioned instance)
 * cannot drain the pool.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import {
  createAdvisoryLock,
  createUnderLock,
  LockWaitTimeoutError,
  withRotationLock,
} from '../../src/coord/rotation-lock.ts'
import type { Logger } from '../../src/core/ports.ts'
import type { KeyRing } from '../../src/keys/key-ring.ts'
import { StoreUnavailableError } from '../../src/store/errors.ts'
import { POSTGRES_URL, postgresUnavailable, uniqueName } from '../helpers/shared-services.ts'

const skip = await postgresUnavailable()

function recordingLogger() {
  const lines: Array<{ obj: Record<string, unknown>; msg?: string | undefined }> = []
  const push = (obj: object, msg?: string) => lines.push({ obj: obj as Record<string, unknown>, msg })
  const log: Logger = { debug: push, info: push, warn: push, error: push }
  return { log, lines }
}

/** A key ring that only counts what is asked of it. */
function countingRing() {
  const calls = { tick: 0, reload: 0, rotate: 0 }
  const ring = {
    tick: async () => {
      calls.tick++
      return ['ticked']
    },
    reload: async () => {
      calls.reload++
    },
    rotate: async () => {
      calls.rotate++
      return ['rotated']
    },
  } as unknown as KeyRing
  return { ring, calls }
}

/** Fails the test (instead of hanging it) when `p` does not settle within `ms`. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: did not return within ${ms} ms`)), ms)
  })
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

describe('rotation lock held by a stuck session', { skip }, () => {
  const name = uniqueName('gatehouse keys test')
  const POOL_MAX = 3
  let holder: pg.Client
  let pool: pg.Pool

  before(async () => {
    // Another "instance" takes the lock and never lets go (its session stays open).
    holder = new pg.Client({ connectionString: POSTGRES_URL })
    await holder.connect()
    await holder.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [name])
    pool = new pg.Pool({ connectionString: POSTGRES_URL, max: POOL_MAX, connectionTimeoutMillis: 2000 })
    pool.on('error', () => {})
  })

  after(async () => {
    await pool.end()
    await holder.end()
  })

  test('ticks give up within the bound, reload anyway, and pin no pool connection', async () => {
    const { log, lines } = recordingLogger()
    const { ring, calls } = countingRing()
    const locked = withRotationLock(ring, createAdvisoryLock(pool, name, { pollMs: 20 }), log, {
      waitMs: 300,
    })
    // More waiters than the pool has connections: one tick a minute from the schedule and one from the
    // expiry monitor, piling up while the holder is stuck.
    const started = performance.now()
    const results = await within(
      3000,
      'ticks waiting for a stuck lock',
      Promise.all(Array.from({ length: POOL_MAX * 2 }, () => locked.tick())),
    )
    const elapsed = performance.now() - started
    assert.deepEqual(
      results,
      results.map(() => []),
    )
    assert.equal(calls.tick, 0, 'the schedule itself never ran: the other session holds the lock')
    assert.equal(calls.reload, POOL_MAX * 2, 'each skipped tick reloaded anyway')
    assert.ok(elapsed < 2000, `returned in ${elapsed.toFixed(0)} ms`)
    assert.equal(
      lines.filter((l) => l.obj['event'] === 'key_lock_wait_timeout').length,
      POOL_MAX * 2,
      'each gave up with a warning',
    )
    // The pool still serves at once: no connection was left behind by the waits.
    assert.equal(pool.waitingCount, 0)
    assert.equal(pool.idleCount, pool.totalCount, 'every connection is back in the pool')
    const { rows } = await within(500, 'a query after the waits', pool.query('SELECT 1 AS one'))
    assert.equal(rows[0].one, 1)
  })

  test('a joined rotation and the start-up wait are bounded too', async () => {
    const { log, lines } = recordingLogger()
    const { ring, calls } = countingRing()
    const lock = createAdvisoryLock(pool, name, { pollMs: 20 })
    await assert.rejects(
      within(3000, 'rotation', withRotationLock(ring, lock, log, { waitMs: 200 }).rotate()),
      (err: unknown) =>
        err instanceof LockWaitTimeoutError &&
        err instanceof StoreUnavailableError &&
        err.code === 'ERR_STORE_UNAVAILABLE' &&
        /still held by another session/.test(err.message),
    )
    assert.equal(calls.rotate, 0)
    await assert.rejects(
      within(
        3000,
        'run',
        lock.run(async () => 'ran', { waitMs: 100 }),
      ),
      LockWaitTimeoutError,
    )
    // At start: the key ring is created without the lock rather than not at all.
    let created = 0
    const value = await within(
      3000,
      'start-up',
      createUnderLock(lock, async () => ++created, log, { waitMs: 200 }),
    )
    assert.equal(value, 1)
    assert.ok(lines.some((l) => l.obj['event'] === 'key_lock_wait_timeout'))
    assert.equal(pool.idleCount, pool.totalCount)
  })

  test('once the holder lets go, a waiter gets the lock and runs', async () => {
    const other = `${name} free later`
    const lock = createAdvisoryLock(pool, other, { pollMs: 20 })
    await holder.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [other])
    const waiting = lock.run(async () => 'ran', { waitMs: 5000 })
    setTimeout(() => {
      void holder.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [other])
    }, 100)
    assert.equal(await within(3000, 'waiter', waiting), 'ran')
    assert.deepEqual(await lock.tryRun(async () => 'free'), { ran: true, value: 'free' })
  })
})
