import { resolve } from 'node:path'
import type { Registry } from 'prom-client'
import { formatDuration } from '../config/duration.ts'
import { resolveSecret } from '../config/load.ts'
import type { Config } from '../config/schema.ts'
import type { Clock } from '../core/clock.ts'
import type { Logger } from '../core/ports.ts'
import { StoreUnavailableError } from '../store/errors.ts'
import type { CacheStore, KeyStore, SessionRevocationStore, TokenStore } from '../store/ports.ts'
import { openPostgresStore, type PostgresStore } from '../store/postgres-store.ts'
import { createReconnectingStore, localCopyAge, readLocalCopy, withLocalCopy } from './local-copy.ts'
import { openRedisCoordinator, type RedisCoordinator } from './redis-coordinator.ts'
import { type AdvisoryLock, createAdvisoryLock } from './rotation-lock.ts'

export type SharedStore = KeyStore & TokenStore & CacheStore & SessionRevocationStore

export interface OpenedSharedState {
  /** PostgreSQL (or its local copy); undefined with Redis alone, where keys and tokens stay in SQLite. */
  store: SharedStore | undefined
  /** Present with PostgreSQL: serialises the key schedule across instances. */
  rotationLock: AdvisoryLock | undefined
  /** Present with PostgreSQL: one instance at a time sends expiry alerts, so each is sent once. */
  alertLock: AdvisoryLock | undefined
  /** False while serving from the local copy (PostgreSQL not reached since start). */
  connected(): boolean
  redis: RedisCoordinator | undefined
  close(): Promise<void>
}

/** The file in data_dir holding the last copy of what verification needs. */
export const LOCAL_COPY_FILE = 'shared-store-copy.json'

/** A URL from the config (inline, or a secret reference holding it). */
export function resolveServiceUrl(
  ref: string | { env: string } | { file: string },
  path: string,
  baseDir: string,
  env?: NodeJS.ProcessEnv,
): string {
  return typeof ref === 'string' ? ref : resolveSecret(ref, path, baseDir, env)
}

/** `scheme://host:port/path` without user or password, for messages. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`
  } catch {
    return '(unparseable URL)'
  }
}

/** An age in seconds, roughly, for messages: `9.5 days`, `3.2 hours`, `12 minutes`. */
function describeAge(seconds: number): string {
  if (seconds >= 86_400) return `${(seconds / 86_400).toFixed(1)} days`
  if (seconds >= 3600) return `${(seconds / 3600).toFixed(1)} hours`
  if (seconds >= 60) return `${Math.floor(seconds / 60)} minutes`
  return `${seconds} seconds`
}

/**
 * Opens what `store.postgres` and `store.redis` name. PostgreSQL unreachable at start: with
 * `allowLocalCopy` (the gateway) and a local copy in data_dir no older than `store.local_copy_max_age`,
 * serve from it and keep trying; else throw {@link StoreUnavailableError} saying so (an older copy
 * would verify with revocations and keys that stale: a token revoked since would be accepted). Redis unreachable at start is not an error: every use
 * of it falls back locally until it answers.
 */
export async function openSharedState(
  config: Config,
  options: {
    baseDir: string
    clock: Clock
    log: Logger
    env?: NodeJS.ProcessEnv | undefined
    registry?: Registry | undefined
    allowLocalCopy: boolean
  },
): Promise<OpenedSharedState | undefined> {
  const { log } = options
  const pgRef = config.store.postgres
  const redisRef = config.store.redis
  if (pgRef === undefined && redisRef === undefined) return undefined
  let store: SharedStore | undefined
  let pool: (() => PostgresStore['pool'] | undefined) | undefined
  let closeStore: () => Promise<void> = async () => {}
  let connected = () => true
  if (pgRef !== undefined) {
    const url = resolveServiceUrl(pgRef, 'store.postgres', options.baseDir, options.env)
    const copyFile = resolve(options.baseDir, config.data_dir, LOCAL_COPY_FILE)
    const open = async () =>
      withLocalCopy(
        await openPostgresStore({ connection: url, schema: config.store.schema, clock: options.clock }),
        copyFile,
        log,
        options.clock,
      )
    try {
      const pgStore = await open()
      store = pgStore
      pool = () => pgStore.pool
      closeStore = () => pgStore.close()
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err
      const copy = options.allowLocalCopy ? readLocalCopy(copyFile) : undefined
      const unreached = `${describeUrl(url)} could not be reached (${(err.cause as Error | undefined)?.message ?? err.message})`
      if (copy === undefined) {
        throw new StoreUnavailableError(
          'PostgreSQL',
          `${unreached}${options.allowLocalCopy ? ` and there is no local copy (${copyFile}) to start from` : ''}`,
          { cause: err },
        )
      }
      const age = localCopyAge(copy, options.clock)
      const maxAge = config.store.local_copy_max_age
      if (age === undefined || age > maxAge) {
        throw new StoreUnavailableError(
          'PostgreSQL',
          `${unreached} and the local copy (${copyFile}) is ${
            age === undefined ? 'of unknown age' : `${describeAge(age)} old`
          }, older than store.local_copy_max_age (${formatDuration(maxAge)}): not starting from it`,
          { cause: err },
        )
      }
      log.warn(
        { event: 'store_local_copy', file: copyFile, savedAt: copy.savedAt, ageSeconds: age },
        'PostgreSQL unreachable at start: verifying from the local copy, refusing writes until it is back',
      )
      const reconnecting = createReconnectingStore({ open, copy, log })
      store = reconnecting
      pool = () => reconnecting.primary()?.pool
      connected = () => reconnecting.primary() !== undefined
      closeStore = async () => {
        await reconnecting.primary()?.close()
      }
    }
  }
  let redis: RedisCoordinator | undefined
  if (redisRef !== undefined) {
    redis = await openRedisCoordinator({
      url: resolveServiceUrl(redisRef, 'store.redis', options.baseDir, options.env),
      prefix: config.store.redis_prefix,
      log,
      registry: options.registry,
    })
  }
  return {
    store,
    rotationLock:
      pool === undefined ? undefined : createAdvisoryLock(pool, `gatehouse keys ${config.store.schema}`),
    alertLock:
      pool === undefined ? undefined : createAdvisoryLock(pool, `gatehouse alerts ${config.store.schema}`),
    connected,
    redis,
    async close() {
      await redis?.close()
      await closeStore()
    },
  }
}
