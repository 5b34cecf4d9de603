import type pg from 'pg'
import type { Logger } from '../core/ports.ts'
import type { KeyRing } from '../keys/key-ring.ts'
import { StoreUnavailableError } from '../store/errors.ts'
import { isConnectionError } from '../store/postgres-store.ts'

/**
 * A PostgreSQL session advisory lock, named. `tryRun` runs the task only when no other session holds
 * the lock; `run` waits for it. The lock lives as long as the connection: an instance killed in the
 * middle releases it with its connection, so nothing stays locked.
 */
export function createAdvisoryLock(pool: pg.Pool | (() => pg.Pool | undefined), name: string) {
  async function withClient<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const p = typeof pool === 'function' ? pool() : pool
    if (p === undefined)
      throw new StoreUnavailableError('PostgreSQL', 'not reached since this instance started')
    let client: pg.PoolClient
    try {
      client = await p.connect()
    } catch (err) {
      if (isConnectionError(err)) throw new StoreUnavailableError('PostgreSQL', (err as Error).message)
      throw err
    }
    let broken = false
    try {
      return await work(client)
    } catch (err) {
      broken = isConnectionError(err)
      if (broken) throw new StoreUnavailableError('PostgreSQL', (err as Error).message, { cause: err })
      throw err
    } finally {
      // A connection that failed is not given back: its lock state is unknown.
      client.release(broken)
    }
  }
  const lockArg = [name]
  return {
    async tryRun<T>(task: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
      return withClient(async (client) => {
        const { rows } = await client.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok',
          lockArg,
        )
        if (rows[0]?.ok !== true) return { ran: false as const }
        try {
          return { ran: true as const, value: await task() }
        } finally {
          await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', lockArg)
        }
      })
    },
    async run<T>(task: () => Promise<T>): Promise<T> {
      return withClient(async (client) => {
        await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', lockArg)
        try {
          return await task()
        } finally {
          await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', lockArg)
        }
      })
    },
  }
}

export type AdvisoryLock = ReturnType<typeof createAdvisoryLock>

/**
 * The key ring with its schedule run by one instance at a time. A tick another instance is running is
 * skipped (this one waits for it to end, then reloads what that one did); an on-demand rotation asked of two instances at once
 * happens once: the second waits for the first, then reloads and reports that nothing more was done.
 * Transitions stay compare-and-set underneath, so even without the lock nothing is done twice.
 */
export function withRotationLock(ring: KeyRing, lock: AdvisoryLock, log: Logger): KeyRing {
  return {
    ...ring,
    async tick() {
      const r = await lock.tryRun(() => ring.tick())
      if (r.ran) return r.value
      log.debug({ event: 'key_tick_skipped' }, 'another instance is running the key schedule')
      // Wait for that instance to finish before reloading: a reload in the middle of its tick would see
      // a new key without its predecessor retired yet (and the expiry inventory would alert on it).
      await lock.run(async () => {})
      await ring.reload()
      return []
    },
    async rotate() {
      const r = await lock.tryRun(() => ring.rotate())
      if (r.ran) return r.value
      // Someone is rotating right now: wait for them to finish, and take their rotation as ours.
      await lock.run(async () => {})
      await ring.reload()
      log.info({ event: 'key_rotation_joined' }, 'another instance rotated the signing keys at the same time')
      return ['rotated by another instance at the same time; nothing more done']
    },
  }
}
