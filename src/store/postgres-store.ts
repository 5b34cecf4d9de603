import pg from 'pg'

import { type Clock, systemClock } from '../core/clock.ts'
import { SchemaTooNewError, StoreUnavailableError, TokenExistsError } from './errors.ts'
import type {
  AlertRecord,
  AlertStore,
  AuditEvent,
  AuditStore,
  CacheStore,
  KeyRecord,
  KeyStore,
  SessionRevocation,
  SessionRevocationStore,
  StoredSessionRevocation,
  TokenRecord,
  TokenStore,
} from './ports.ts'
import {
  checkAlert,
  checkAudit,
  checkKeyTimes,
  checkSessionRevocation,
  checkTime,
  checkTokenTimes,
} from './validate.ts'

export interface PostgresStoreOptions {
  /** A `postgres://` URL, or a pool made by the caller (closed by the caller then). */
  connection: string | pg.Pool
  /**
   * Schema holding Gatehouse's tables, created when missing. Default `gatehouse`. Lower-case letters,
   * digits and `_`, so it never needs quoting rules explained.
   */
  schema?: string
  /** Default `systemClock`. Used when `listTokens` is called without `now`, and to date applied migrations. */
  clock?: Clock
  /** Pool size when a URL is given. Default 10. */
  maxConnections?: number
  /** How long to wait for a connection before {@link StoreUnavailableError}. Default 5000 ms. */
  connectTimeoutMs?: number
}

export type PostgresStore = KeyStore &
  TokenStore &
  CacheStore &
  AlertStore &
  AuditStore &
  SessionRevocationStore & {
    /** The pool, for coordination that lives next to the data (advisory locks). */
    readonly pool: pg.Pool
    readonly schema: string
    /** Ends the pool when the store made it. */
    close(): Promise<void>
  }

const COMPONENT = 'store'
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * Applied in order, each once, in one transaction under an advisory lock. Never edit a shipped entry:
 * append a new version. Text keys use the "C" collation so that orders match the SQLite store (byte order).
 */
const MIGRATIONS: ReadonlyArray<{ version: number; sql: string }> = [
  {
    version: 1,
    sql: `CREATE TABLE gh_keys (
      kid TEXT COLLATE "C" PRIMARY KEY,
      alg TEXT NOT NULL,
      state TEXT NOT NULL,
      public_jwk JSONB NOT NULL,
      private_jwe TEXT NOT NULL,
      created_at BIGINT NOT NULL,
      activates_at BIGINT NOT NULL,
      retires_at BIGINT NOT NULL,
      remove_at BIGINT NOT NULL
    );
    CREATE TABLE gh_tokens (
      jti TEXT COLLATE "C" PRIMARY KEY,
      subject TEXT NOT NULL,
      scopes JSONB NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
      audience TEXT NOT NULL,
      parent_jti TEXT COLLATE "C",
      issued_at BIGINT NOT NULL,
      expires_at BIGINT NOT NULL,
      revoked_at BIGINT,
      description TEXT
    );
    CREATE INDEX gh_tokens_parent_jti ON gh_tokens (parent_jti) WHERE parent_jti IS NOT NULL;
    CREATE INDEX gh_tokens_revoked_at ON gh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE gh_cache (
      key TEXT COLLATE "C" PRIMARY KEY,
      value TEXT NOT NULL,
      fetched_at BIGINT NOT NULL
    );`,
  },
  {
    version: 2,
    sql: `CREATE TABLE gh_alerts (
      credential TEXT COLLATE "C" NOT NULL,
      threshold_seconds BIGINT NOT NULL,
      expires_at BIGINT NOT NULL,
      sent_at BIGINT,
      attempts INTEGER NOT NULL,
      next_attempt_at BIGINT NOT NULL,
      last_error TEXT,
      PRIMARY KEY (credential, threshold_seconds)
    );
    CREATE TABLE gh_first_seen (
      key TEXT COLLATE "C" PRIMARY KEY,
      seen_at BIGINT NOT NULL
    );
    CREATE TABLE gh_audit (
      id BIGSERIAL PRIMARY KEY,
      at BIGINT NOT NULL,
      type TEXT NOT NULL,
      subject TEXT,
      detail JSONB NOT NULL
    );
    CREATE INDEX gh_audit_at ON gh_audit (at);`,
  },
  {
    version: 3,
    sql: `CREATE TABLE gh_session_revocations (
      kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('sid', 'sub', 'psid')),
      value TEXT COLLATE "C" NOT NULL,
      revoked_at BIGINT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (kind, value)
    );
    CREATE INDEX gh_session_revocations_expires_at ON gh_session_revocations (expires_at);`,
  },
  {
    // When each revocation was last written (the database's clock), so a refresh reads only what changed.
    // Rows already there count as written now; the default serves an instance of the version before.
    version: 4,
    sql: `ALTER TABLE gh_session_revocations
      ADD COLUMN stored_at BIGINT NOT NULL DEFAULT floor(extract(epoch from now()))::bigint;
    CREATE INDEX gh_session_revocations_stored_at ON gh_session_revocations (stored_at);`,
  },
]

/** The newest schema version this Gatehouse knows (tests check a newer one is refused). */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0)

interface KeyRow {
  kid: string
  alg: KeyRecord['alg']
  state: KeyRecord['state']
  public_jwk: Record<string, unknown>
  private_jwe: string
  created_at: string
  activates_at: string
  retires_at: string
  remove_at: string
}

interface TokenRow {
  jti: string
  subject: string
  scopes: string[]
  audience: string
  parent_jti: string | null
  issued_at: string
  expires_at: string
  revoked_at: string | null
  description: string | null
}

/**
 * Keys, tokens and cached copies in PostgreSQL, shared by many Gatehouse instances. Creates its schema
 * and tables when missing through versioned migrations recorded in `<schema>.gatehouse_schema`, run in
 * one transaction under an advisory lock so two instances starting together do not race. Throws
 * {@link SchemaTooNewError} when a newer Gatehouse has migrated the schema already, and
 * {@link StoreUnavailableError} (`ERR_STORE_UNAVAILABLE`) whenever the database cannot be reached.
 *
 * @example
 * ```ts
 * const store = await openPostgresStore({ connection: 'postgres://gatehouse@db/gatehouse' })
 * const moved = await store.transitionKey('k-2', 'next', 'current') // false if another instance won
 * await store.close()
 * ```
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  const schema = options.schema ?? 'gatehouse'
  if (!SCHEMA_NAME.test(schema)) {
    throw new TypeError(`schema: expected lower-case letters, digits and _ (at most 63), found "${schema}"`)
  }
  const clock = options.clock ?? systemClock
  const ownPool = typeof options.connection === 'string'
  const pool =
    typeof options.connection === 'string'
      ? new pg.Pool({
          connectionString: options.connection,
          max: options.maxConnections ?? 10,
          connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
          application_name: 'gatehouse',
        })
      : options.connection
  if (!(pool instanceof pg.Pool)) throw new TypeError('connection: expected a postgres:// URL or a pg.Pool')
  // An idle client losing its server emits on the pool; without a listener that would end the process.
  pool.on('error', () => {})
  try {
    await guard(() => migrate(pool, schema, clock))
  } catch (error) {
    if (ownPool) await pool.end().catch(() => {})
    throw error
  }

  const s = `"${schema}"`
  const newestFirst = 'ORDER BY issued_at DESC, jti DESC'
  const query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) =>
    guard(() => pool.query<R>(text, values))

  return {
    pool,
    schema,

    async close() {
      if (ownPool) await pool.end()
    },

    async listKeys() {
      const { rows } = await query<KeyRow>(`SELECT * FROM ${s}.gh_keys ORDER BY created_at, kid`)
      return rows.map(toKey)
    },

    async insertKey(key) {
      checkKeyTimes(key)
      const { rowCount } = await query(
        `INSERT INTO ${s}.gh_keys
          (kid, alg, state, public_jwk, private_jwe, created_at, activates_at, retires_at, remove_at)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (kid) DO NOTHING`,
        [
          key.kid,
          key.alg,
          key.state,
          JSON.stringify(key.publicJwk),
          key.privateJwe,
          key.createdAt,
          key.activatesAt,
          key.retiresAt,
          key.removeAt,
        ],
      )
      return (rowCount ?? 0) > 0
    },

    async transitionKey(kid, from, to) {
      const { rowCount } = await query(`UPDATE ${s}.gh_keys SET state = $1 WHERE kid = $2 AND state = $3`, [
        to,
        kid,
        from,
      ])
      return (rowCount ?? 0) > 0
    },

    async deleteKey(kid) {
      const { rowCount } = await query(`DELETE FROM ${s}.gh_keys WHERE kid = $1`, [kid])
      return (rowCount ?? 0) > 0
    },

    async insertToken(token) {
      checkTokenTimes(token)
      // One statement, so the record is written whole or not at all; a taken jti lands as 0 rows.
      const { rowCount } = await query(
        `INSERT INTO ${s}.gh_tokens
          (jti, subject, scopes, audience, parent_jti, issued_at, expires_at, revoked_at, description)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (jti) DO NOTHING`,
        [
          token.jti,
          token.subject,
          JSON.stringify(token.scopes),
          token.audience,
          token.parentJti ?? null,
          token.issuedAt,
          token.expiresAt,
          token.revokedAt ?? null,
          token.description ?? null,
        ],
      )
      if ((rowCount ?? 0) === 0) throw new TokenExistsError(token.jti)
    },

    async getToken(jti) {
      const { rows } = await query<TokenRow>(`SELECT * FROM ${s}.gh_tokens WHERE jti = $1`, [jti])
      return rows[0] === undefined ? undefined : toToken(rows[0])
    },

    async listTokens({ includeExpired = false, now = Math.floor(clock.now() / 1000) } = {}) {
      const { rows } = includeExpired
        ? await query<TokenRow>(`SELECT * FROM ${s}.gh_tokens ${newestFirst}`)
        : await query<TokenRow>(`SELECT * FROM ${s}.gh_tokens WHERE expires_at > $1 ${newestFirst}`, [now])
      return rows.map(toToken)
    },

    async listDescendants(jti) {
      // UNION (not UNION ALL) drops rows already seen, so a cycle of parent links ends the recursion.
      const { rows } = await query<TokenRow>(
        `WITH RECURSIVE descendants (jti) AS (
          SELECT jti FROM ${s}.gh_tokens WHERE parent_jti = $1
          UNION
          SELECT child.jti FROM ${s}.gh_tokens AS child JOIN descendants ON child.parent_jti = descendants.jti
        )
        SELECT t.* FROM ${s}.gh_tokens AS t JOIN descendants USING (jti) WHERE t.jti <> $1 ${newestFirst}`,
        [jti],
      )
      return rows.map(toToken)
    },

    async revokeTokens(jtis, at) {
      checkTime(at, 'at')
      if (jtis.length === 0) return 0
      // One statement: all of them or none.
      const { rowCount } = await query(
        `UPDATE ${s}.gh_tokens SET revoked_at = $1 WHERE jti = ANY($2::text[]) AND revoked_at IS NULL`,
        [at, [...jtis]],
      )
      return rowCount ?? 0
    },

    async listRevoked(now) {
      const { rows } = await query<{ jti: string; expires_at: string }>(
        `SELECT jti, expires_at FROM ${s}.gh_tokens
          WHERE revoked_at IS NOT NULL AND expires_at > $1 ORDER BY expires_at, jti`,
        [now],
      )
      return rows.map((row) => ({ jti: row.jti, expiresAt: Number(row.expires_at) }))
    },

    async revokeSessions(entries) {
      for (const e of entries) checkSessionRevocation(e)
      if (entries.length === 0) return
      // One statement: all of them or none; a revocation never shrinks. The same kind and value named twice
      // in one call would make ON CONFLICT touch a row twice, so they are merged here first.
      const merged = new Map<string, SessionRevocation>()
      for (const e of entries) {
        const k = `${e.kind}\u0000${e.value}`
        const prior = merged.get(k)
        merged.set(k, {
          ...e,
          revokedAt: Math.max(e.revokedAt, prior?.revokedAt ?? e.revokedAt),
          expiresAt: Math.max(e.expiresAt, prior?.expiresAt ?? e.expiresAt),
        })
      }
      const list = [...merged.values()]
      await query(
        `INSERT INTO ${s}.gh_session_revocations (kind, value, revoked_at, expires_at, stored_at)
          SELECT *, floor(extract(epoch from clock_timestamp()))::bigint
          FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
          ON CONFLICT (kind, value) DO UPDATE SET
          revoked_at = GREATEST(gh_session_revocations.revoked_at, excluded.revoked_at),
          expires_at = GREATEST(gh_session_revocations.expires_at, excluded.expires_at),
          stored_at = excluded.stored_at`,
        [
          list.map((e) => e.kind),
          list.map((e) => e.value),
          list.map((e) => e.revokedAt),
          list.map((e) => e.expiresAt),
        ],
      )
    },

    async listSessionRevocations(now) {
      checkTime(now, 'now')
      const { rows } = await query<SessionRevocationRow>(
        `SELECT * FROM ${s}.gh_session_revocations WHERE expires_at > $1 ORDER BY expires_at, kind, value`,
        [now],
      )
      return rows.map(toStoredSessionRevocation)
    },

    async listSessionRevocationsSince(now, sinceStoredAt) {
      checkTime(now, 'now')
      checkTime(sinceStoredAt, 'sinceStoredAt')
      const { rows } = await query<SessionRevocationRow>(
        `SELECT * FROM ${s}.gh_session_revocations WHERE expires_at > $1 AND stored_at >= $2
          ORDER BY expires_at, kind, value`,
        [now, sinceStoredAt],
      )
      return rows.map(toStoredSessionRevocation)
    },

    async getSessionRevocation(kind, value) {
      const { rows } = await query<SessionRevocationRow>(
        `SELECT * FROM ${s}.gh_session_revocations WHERE kind = $1 AND value = $2`,
        [kind, value],
      )
      return rows[0] === undefined ? undefined : toSessionRevocation(rows[0])
    },

    async pruneSessionRevocations(now) {
      checkTime(now, 'now')
      const { rowCount } = await query(`DELETE FROM ${s}.gh_session_revocations WHERE expires_at <= $1`, [
        now,
      ])
      return rowCount ?? 0
    },

    async getCached(key) {
      const { rows } = await query<{ value: string; fetched_at: string }>(
        `SELECT value, fetched_at FROM ${s}.gh_cache WHERE key = $1`,
        [key],
      )
      const row = rows[0]
      return row === undefined ? undefined : { value: row.value, fetchedAt: Number(row.fetched_at) }
    },

    async putCached(key, value, fetchedAt) {
      checkTime(fetchedAt, 'fetchedAt')
      await query(
        `INSERT INTO ${s}.gh_cache (key, value, fetched_at) VALUES ($1, $2, $3)
          ON CONFLICT (key) DO UPDATE SET value = excluded.value, fetched_at = excluded.fetched_at`,
        [key, value, fetchedAt],
      )
    },

    async listAlerts() {
      const { rows } = await query<AlertRow>(
        `SELECT * FROM ${s}.gh_alerts ORDER BY credential, threshold_seconds`,
      )
      return rows.map(toAlert)
    },

    async putAlert(record) {
      checkAlert(record)
      await query(
        `INSERT INTO ${s}.gh_alerts
          (credential, threshold_seconds, expires_at, sent_at, attempts, next_attempt_at, last_error)
          VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (credential, threshold_seconds) DO UPDATE SET
          expires_at = excluded.expires_at, sent_at = excluded.sent_at, attempts = excluded.attempts,
          next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error`,
        [
          record.credential,
          record.thresholdSeconds,
          record.expiresAt,
          record.sentAt ?? null,
          record.attempts,
          record.nextAttemptAt,
          record.lastError ?? null,
        ],
      )
    },

    async deleteAlerts(credential) {
      const { rowCount } = await query(`DELETE FROM ${s}.gh_alerts WHERE credential = $1`, [credential])
      return rowCount ?? 0
    },

    async markSeen(key, at) {
      checkTime(at, 'at')
      // Insert only when absent, then read: two instances agree on the first time.
      await query(
        `INSERT INTO ${s}.gh_first_seen (key, seen_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`,
        [key, at],
      )
      const { rows } = await query<{ seen_at: string }>(
        `SELECT seen_at FROM ${s}.gh_first_seen WHERE key = $1`,
        [key],
      )
      return Number(rows[0]!.seen_at)
    },

    async appendAudit(events) {
      for (const e of events) checkAudit(e)
      if (events.length === 0) return
      // One statement: all of them or none.
      await query(
        `INSERT INTO ${s}.gh_audit (at, type, subject, detail)
          SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[])`,
        [
          events.map((e) => e.at),
          events.map((e) => e.type),
          events.map((e) => e.subject ?? null),
          events.map((e) => JSON.stringify(e.detail)),
        ],
      )
    },

    async pruneAudit(before) {
      checkTime(before, 'before')
      const { rowCount } = await query(`DELETE FROM ${s}.gh_audit WHERE at < $1`, [before])
      return rowCount ?? 0
    },

    async listAudit({ since, limit = 1000 }) {
      checkTime(since, 'since')
      const { rows } = await query<AuditRow>(
        `SELECT * FROM (SELECT * FROM ${s}.gh_audit WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2) AS newest
          ORDER BY at, id`,
        [since, limit],
      )
      return rows.map((row) => ({
        at: Number(row.at),
        type: row.type,
        subject: row.subject ?? undefined,
        detail: row.detail,
      }))
    },
  }
}

interface SessionRevocationRow {
  kind: SessionRevocation['kind']
  value: string
  revoked_at: string
  expires_at: string
  stored_at: string
}

function toStoredSessionRevocation(row: SessionRevocationRow): StoredSessionRevocation {
  return { ...toSessionRevocation(row), storedAt: Number(row.stored_at) }
}

function toSessionRevocation(row: SessionRevocationRow): SessionRevocation {
  return {
    kind: row.kind,
    value: row.value,
    revokedAt: Number(row.revoked_at),
    expiresAt: Number(row.expires_at),
  }
}

interface AlertRow {
  credential: string
  threshold_seconds: string
  expires_at: string
  sent_at: string | null
  attempts: number
  next_attempt_at: string
  last_error: string | null
}

interface AuditRow {
  at: string
  type: AuditEvent['type']
  subject: string | null
  detail: AuditEvent['detail']
}

function toAlert(row: AlertRow): AlertRecord {
  return {
    credential: row.credential,
    thresholdSeconds: Number(row.threshold_seconds),
    expiresAt: Number(row.expires_at),
    sentAt: row.sent_at === null ? undefined : Number(row.sent_at),
    attempts: row.attempts,
    nextAttemptAt: Number(row.next_attempt_at),
    lastError: row.last_error ?? undefined,
  }
}

/** The advisory lock key of a schema's migrations: one bigint derived from its name. */
function migrationLockSql(): string {
  return `SELECT pg_advisory_xact_lock(hashtextextended('gatehouse migrate ' || $1, 0))`
}

async function migrate(pool: pg.Pool, schema: string, clock: Clock): Promise<void> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    // Held until COMMIT: a second instance starting now waits here, then finds the work done.
    await client.query(migrationLockSql(), [schema])
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
    await client.query(`CREATE TABLE IF NOT EXISTS "${schema}".gatehouse_schema (
      component TEXT NOT NULL,
      version INTEGER NOT NULL,
      applied_at BIGINT NOT NULL,
      PRIMARY KEY (component, version)
    )`)
    const { rows } = await client.query<{ version: number }>(
      `SELECT version FROM "${schema}".gatehouse_schema WHERE component = $1`,
      [COMPONENT],
    )
    const applied = new Set(rows.map((row) => Number(row.version)))
    const newest = Math.max(0, ...applied)
    if (newest > POSTGRES_SCHEMA_VERSION) throw new SchemaTooNewError(newest, POSTGRES_SCHEMA_VERSION)
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue
      // Unqualified names in the migration land in the store's schema.
      await client.query(`SET LOCAL search_path TO "${schema}"`)
      await client.query(migration.sql)
      await client.query(
        `INSERT INTO "${schema}".gatehouse_schema (component, version, applied_at) VALUES ($1, $2, $3)`,
        [COMPONENT, migration.version, Math.floor(clock.now() / 1000)],
      )
    }
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}

// Connection-level failures (refused, reset, timed out, server shutting down: SQLSTATE classes 08 and 57P)
// become one error with a stable code; anything else (a constraint, a bug) is thrown as it is.
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
])

export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string') {
    if (UNREACHABLE_CODES.has(code)) return true
    if (code.startsWith('08') || code.startsWith('57P')) return true
  }
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|connection timeout/i.test(
    error.message,
  )
}

async function guard<T>(task: () => Promise<T>): Promise<T> {
  try {
    return await task()
  } catch (error) {
    if (isConnectionError(error)) {
      throw new StoreUnavailableError('PostgreSQL', (error as Error).message, { cause: error })
    }
    throw error
  }
}

function toKey(row: KeyRow): KeyRecord {
  return {
    kid: row.kid,
    alg: row.alg,
    state: row.state,
    publicJwk: row.public_jwk,
    privateJwe: row.private_jwe,
    createdAt: Number(row.created_at),
    activatesAt: Number(row.activates_at),
    retiresAt: Number(row.retires_at),
    removeAt: Number(row.remove_at),
  }
}

function toToken(row: TokenRow): TokenRecord {
  return {
    jti: row.jti,
    subject: row.subject,
    scopes: row.scopes,
    audience: row.audience,
    parentJti: row.parent_jti ?? undefined,
    issuedAt: Number(row.issued_at),
    expiresAt: Number(row.expires_at),
    revokedAt: row.revoked_at === null ? undefined : Number(row.revoked_at),
    description: row.description ?? undefined,
  }
}
