import type pg from 'pg'
import type { Logger } from '../core/ports.ts'
import type { KeyRing } from '../keys/key-ring.ts'
import { StoreUnavailableError } from '../store/errors.ts'
import { isConnectionError } from '../store/postgres-store.ts'

/** How long {@link AdvisoryLock.run} waits for another session's lock by default (startup). */
export const DEFAULT_LOCK_WAIT_MS = 30_000
/** How long a skipped key tick, or a joined rotation, waits for the instance running it. */
export const TICK_LOCK_WAIT_MS = 5_000

/**
 * The lock was still held by another session when the wait ran out: that instance is stalled or cut off
 * from the others while its session (and so the lock) lives on. A {@link StoreUnavailableError}, so a
 * request that met it (an on-demand rotation) is answered 503 like any other shared-store trouble.
 */
export class LockWaitTimeoutError extends StoreUnavailableError {
  readonly lock: string
  readonly waitedMs: number
  constructor(lock: string, waitedMs: number) {
    super(
      'PostgreSQL',
      `the lock "${lock}" is still held by another session after ${Math.round(waitedMs)} ms (an instance stalled or partitioned while holding it?)`,
    )
    this.lock = lock
    this.waitedMs = waitedMs
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * A PostgreSQL session advisory lock, named. `tryRun` runs the task only when no other session holds
 * the lock; `run` waits for it, for at most `waitMs`. The lock lives as long as the connection: an
 * instance killed in the middle releases it with its connection, so nothing stays locked.
 *
 * Waiting never holds a pool connection: `run` polls `pg_try_advisory_lock`, giving the connection back
 * between tries. A session that keeps the lock forever (an instance partitioned from the others but not
 * from PostgreSQL, or stalled) therefore costs each waiter at most `waitMs` and never a connection, and
 * the pool cannot be drained by waiters piling up behind it.
 */
export function createAdvisoryLock(
  pool: pg.Pool | (() => pg.Pool | undefined),
  name: string,
  options: { pollMs?: number } = {},
) {
  const pollMs = options.pollMs ?? 100
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
  async function tryRun<T>(task: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
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
  }
  return {
    name,
    tryRun,
    /**
     * Runs `task` holding the lock, waiting for it at most `waitMs` (default {@link DEFAULT_LOCK_WAIT_MS});
     * past that, throws {@link LockWaitTimeoutError} without running it.
     */
    async run<T>(task: () => Promise<T>, runOptions: { waitMs?: number } = {}): Promise<T> {
      const waitMs = runOptions.waitMs ?? DEFAULT_LOCK_WAIT_MS
      const start = performance.now()
      for (let attempt = 0; ; attempt++) {
        const r = await tryRun(task)
        if (r.ran) return r.value
        const left = waitMs - (performance.now() - start)
        if (left <= 0) throw new LockWaitTimeoutError(name, performance.now() - start)
        // Tries spread out (up to 5 × pollMs apart), so waiters do not poll in step.
        const pause = Math.min(pollMs * Math.min(attempt + 1, 5) * (0.5 + Math.random() / 2), left)
        await sleep(pause)
      }
    },
  }
}

export type AdvisoryLock = ReturnType<typeof createAdvisoryLock>

/**
 * The key ring with its schedule run by one instance at a time. A tick another instance is running is
 * skipped (this one waits for it to end, then reloads what that one did); an on-demand rotation asked of two instances at once
 * happens once: the second waits for the first, then reloads and reports that nothing more was done.
 * Transitions stay compare-and-set underneath, so even without the lock nothing is done twice.
 *
 * Every wait is bounded by `waitMs` (default {@link TICK_LOCK_WAIT_MS}): a skipped tick whose wait runs
 * out logs it and reloads anyway (the next tick tries again); a joined rotation whose wait runs out fails
 * with {@link LockWaitTimeoutError} (503), saying the lock is held.
 */
export function withRotationLock(
  ring: KeyRing,
  lock: AdvisoryLock,
  log: Logger,
  options: { waitMs?: number } = {},
): KeyRing {
  const waitMs = options.waitMs ?? TICK_LOCK_WAIT_MS
  return {
    ...ring,
    async tick() {
      const r = await lock.tryRun(() => ring.tick())
      if (r.ran) return r.value
      log.debug({ event: 'key_tick_skipped' }, 'another instance is running the key schedule')
      // Wait for that instance to finish before reloading: a reload in the middle of its tick would see
      // a new key without its predecessor retired yet (and the expiry inventory would alert on it).
      try {
        await lock.run(async () => {}, { waitMs })
      } catch (err) {
        if (!(err instanceof LockWaitTimeoutError)) throw err
        log.warn(
          { event: 'key_lock_wait_timeout', waitedMs: Math.round(err.waitedMs) },
          'the key schedule lock is held by another instance for too long: tick skipped, keys reloaded as they are',
        )
      }
      await ring.reload()
      return []
    },
    async rotate() {
      const r = await lock.tryRun(() => ring.rotate())
      if (r.ran) return r.value
      // Someone is rotating right now: wait for them to finish, and take their rotation as ours.
      await lock.run(async () => {}, { waitMs })
      await ring.reload()
      log.info({ event: 'key_rotation_joined' }, 'another instance rotated the signing keys at the same time')
      return ['rotated by another instance at the same time; nothing more done']
    },
  }
}

/**
 * Creates the key ring at start under the lock, so that instances starting together do not each create
 * a first key. The wait is bounded (`waitMs`, default {@link DEFAULT_LOCK_WAIT_MS}); when it runs out the
 * ring is created WITHOUT the lock rather than refusing to start: the holder may stay stuck for as long
 * as PostgreSQL keeps its session (hours, with default TCP keepalives), and every key transition is
 * compare-and-set (`transitionKey`), with a tick retiring the duplicate keys two instances ticking at
 * once can create. Starting without the lock is at worst one extra key, retired at once; refusing would
 * keep every restarting instance down for as long as the stuck one holds on.
 */
export async function createUnderLock<T>(
  lock: AdvisoryLock,
  create: () => Promise<T>,
  log: Logger,
  options: { waitMs?: number } = {},
): Promise<T> {
  try {
    return await lock.run(create, { waitMs: options.waitMs ?? DEFAULT_LOCK_WAIT_MS })
  } catch (err) {
    if (!(err instanceof LockWaitTimeoutError)) throw err
    log.warn(
      { event: 'key_lock_wait_timeout', waitedMs: Math.round(err.waitedMs) },
      'the key schedule lock is held by another instance: creating the key ring without it (key transitions are compare-and-set)',
    )
    return create()
  }
}
