import { resolve } from 'node:path'
import type { DatabaseSync } from 'node:sqlite'
import type { Registry } from 'prom-client'
import { CREDENTIAL_CLASSES, type LifetimeConfig, signingKeyRetention } from './config/lifetimes.ts'
import { resolveSecret } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { type AuditLog, createAuditLog } from './coord/audit-log.ts'
import type { RedisCoordinator } from './coord/redis-coordinator.ts'
import { type AdvisoryLock, createUnderLock, withRotationLock } from './coord/rotation-lock.ts'
import { type OpenedSharedState, openSharedState } from './coord/shared-store.ts'
import type { Clock } from './core/clock.ts'
import { claimHeadersOf } from './core/identity.ts'
import type { Logger } from './core/ports.ts'
import { createSessionRevocationList, type SessionRevocationList } from './core/session-revocations.ts'
import { createKeyRing, type KeyRing } from './keys/key-ring.ts'
import { openDatabase } from './store/open-sqlite.ts'
import type { AuditStore, CacheStore, KeyStore, SessionRevocationStore, TokenStore } from './store/ports.ts'
import { createSQLiteStore } from './store/sqlite-store.ts'
import { type CapReport, createTokenService, type TokenService } from './tokens/token-service.ts'

export interface TokenServices {
  store: KeyStore & TokenStore & CacheStore & SessionRevocationStore
  keyRing: KeyRing
  tokens: TokenService
  /** Signed-out browser sessions (Gatehouse 8): in memory, in the store, pushed through Redis. */
  sessions: SessionRevocationList
  /** Seconds a retired key stays published (derived from the token lifetimes, never configured). */
  retentionSeconds: number
  /** Redis, when `store.redis` is set: rate limits, refresh locks, revocation fan-out. */
  redis?: RedisCoordinator | undefined
  /** False while serving from the local copy because PostgreSQL was not reached since start. */
  storeConnected(): boolean
  /** With PostgreSQL: held by the one instance sending expiry alerts at a time. */
  alertLock?: AdvisoryLock | undefined
  /** The logger to give every part: security events in it also go to the audit log. */
  log: Logger
  audit: AuditLog | undefined
  close(): Promise<void>
}

function isAuditStore<S extends object>(store: S): store is S & AuditStore {
  return 'appendAudit' in store && 'listAudit' in store
}

/**
 * Seconds a retired signing key must stay published: the longest lifetime anything it signs can
 * have (an API token, or a derived token, itself capped by its parent), plus the verification leeway.
 */
export function keyRetentionSeconds(config: Config): number {
  return signingKeyRetention(lifetimeConfig(config)) + config.provider.leeway
}

/** The config's lifetimes in the lifetimes module's units. */
export function lifetimeConfig(config: Config): LifetimeConfig {
  const out = {} as LifetimeConfig
  for (const c of CREDENTIAL_CLASSES) {
    out[c] = { ttlSeconds: config.lifetimes[c].ttl, maxTtlSeconds: config.lifetimes[c].max_ttl }
  }
  return out
}

/**
 * The key ring and the token service over the store in `data_dir` (SQLite), shared by the gateway
 * and the CLI commands so both see the same keys and tokens.
 */
export async function openTokenServices(
  config: Config,
  options: {
    baseDir: string
    clock: Clock
    log: Logger
    env?: NodeJS.ProcessEnv
    store?: KeyStore & TokenStore & CacheStore & SessionRevocationStore
    onCapped?: (cap: CapReport) => void
    /** Where the shared-state metrics go (the gateway's registry). */
    registry?: Registry
    /** Start from the local copy in data_dir when PostgreSQL is down (the gateway; not CLI commands). */
    allowLocalCopy?: boolean
  },
): Promise<TokenServices> {
  let db: DatabaseSync | undefined
  let store = options.store
  // store.postgres / store.redis in the config; an injected store (tests) takes precedence for keys and tokens.
  const shared: OpenedSharedState | undefined = await openSharedState(config, {
    baseDir: options.baseDir,
    clock: options.clock,
    log: options.log,
    env: options.env,
    registry: options.registry,
    allowLocalCopy: options.allowLocalCopy ?? false,
  })
  store ??= shared?.store
  if (store === undefined) {
    db = openDatabase(resolve(options.baseDir, config.data_dir))
    store = createSQLiteStore(db)
  }
  const secrets = (config.keys.encryption_secrets ?? config.session.secrets).map((ref, i) =>
    resolveSecret(
      ref,
      config.keys.encryption_secrets ? `keys.encryption_secrets[${i}]` : `session.secrets[${i}]`,
      options.baseDir,
      options.env,
    ),
  )
  const retentionSeconds = keyRetentionSeconds(config)
  // Security events from the parts below go to the audit log in the same store.
  const audit = isAuditStore(store)
    ? createAuditLog({ store, log: options.log, clock: options.clock })
    : undefined
  const log = audit?.logger ?? options.log
  const lock = options.store === undefined && shared?.connected() ? shared.rotationLock : undefined
  const ringOptions = {
    store,
    clock: options.clock,
    log,
    algorithm: config.keys.algorithm,
    // Session secrets double as the at-rest secret by default: HKDF with another label keeps the keys apart.
    encryptionSecrets: secrets,
    signingPeriodSeconds: config.lifetimes.signing_key.ttl,
    publishAheadSeconds: config.keys.publish_ahead,
    retentionSeconds,
  }
  // Under the rotation lock, so that instances starting together do not each create a first key; a lock
  // held past 30 s (a stuck instance) is gone around, not waited for (see createUnderLock).
  let keyRing = lock
    ? await createUnderLock(lock, () => createKeyRing(ringOptions), log)
    : await createKeyRing(ringOptions)
  if (shared?.rotationLock !== undefined && options.store === undefined) {
    keyRing = withRotationLock(keyRing, shared.rotationLock, log)
  }
  const redis = shared?.redis
  const tokens = createTokenService({
    store,
    keyRing,
    clock: options.clock,
    log,
    issuer: new URL(config.public_url).origin,
    audience: config.tokens.audience ?? new URL(config.public_url).origin,
    claimHeaders: claimHeadersOf(config.identity.headers_from_claims),
    lifetimes: {
      apiToken: {
        ttlSeconds: config.lifetimes.api_token.ttl,
        maxTtlSeconds: config.lifetimes.api_token.max_ttl,
      },
      derivedToken: {
        ttlSeconds: config.lifetimes.derived_token.ttl,
        maxTtlSeconds: config.lifetimes.derived_token.max_ttl,
      },
    },
    leewaySeconds: config.provider.leeway,
    onCapped: options.onCapped,
    onRevoked: redis ? (entries) => void redis.publishRevoked(entries) : undefined,
  })
  await tokens.refreshRevocations()
  const sessions = createSessionRevocationList({
    store,
    clock: options.clock,
    log,
    maxTtlSeconds: config.lifetimes.session.max_ttl,
    onRevoked: redis ? (entries) => void redis.publishSessionsRevoked(entries) : undefined,
  })
  await sessions.reload()
  return {
    store,
    keyRing,
    tokens,
    sessions,
    retentionSeconds,
    redis,
    storeConnected: () => shared?.connected() ?? true,
    alertLock: options.store === undefined ? shared?.alertLock : undefined,
    log,
    audit,
    async close() {
      await audit?.close()
      db?.close()
      await shared?.close()
    },
  }
}
