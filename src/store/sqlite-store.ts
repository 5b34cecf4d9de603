import { DatabaseSync } from 'node:sqlite'

import { type Clock, systemClock } from '../core/clock.ts'
import { SchemaTooNewError, TokenExistsError } from './errors.ts'
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

export interface SQLiteStoreOptions {
  /** Default `systemClock`. Used when `listTokens` is called without `now`, to date applied migrations
   * and as session revocations' `storedAt`. */
  clock?: Clock
}

/** The name this store's migrations go by in `gatehouse_schema`, which other parts of Gatehouse may share. */
const COMPONENT = 'store'

/**
 * Applied in order, each once, inside one transaction. Never edit a shipped entry: append a new version.
 * An `sql` function is given the store's clock (whole seconds) at migration.
 */
const MIGRATIONS: ReadonlyArray<{ version: number; sql: string | ((now: number) => string) }> = [
  {
    version: 1,
    sql: `CREATE TABLE gh_keys (
      kid TEXT PRIMARY KEY,
      alg TEXT NOT NULL,
      state TEXT NOT NULL,
      public_jwk TEXT NOT NULL CHECK (json_valid(public_jwk)),
      private_jwe TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      activates_at INTEGER NOT NULL,
      retires_at INTEGER NOT NULL,
      remove_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE gh_tokens (
      jti TEXT PRIMARY KEY,
      subject TEXT NOT NULL,
      scopes TEXT NOT NULL CHECK (json_valid(scopes)),
      audience TEXT NOT NULL,
      parent_jti TEXT,
      issued_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      revoked_at INTEGER,
      description TEXT
    ) STRICT;
    CREATE INDEX gh_tokens_parent_jti ON gh_tokens (parent_jti) WHERE parent_jti IS NOT NULL;
    CREATE INDEX gh_tokens_revoked_at ON gh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;`,
  },
  {
    version: 2,
    sql: `CREATE TABLE gh_cache (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL,
      fetched_at INTEGER NOT NULL
    ) STRICT;`,
  },
  {
    version: 3,
    sql: `CREATE TABLE gh_alerts (
      credential TEXT NOT NULL,
      threshold_seconds INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      sent_at INTEGER,
      attempts INTEGER NOT NULL,
      next_attempt_at INTEGER NOT NULL,
      last_error TEXT,
      PRIMARY KEY (credential, threshold_seconds)
    ) STRICT;
    CREATE TABLE gh_first_seen (
      key TEXT PRIMARY KEY,
      seen_at INTEGER NOT NULL
    ) STRICT;`,
  },
  {
    version: 4,
    sql: `CREATE TABLE gh_audit (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at INTEGER NOT NULL,
      type TEXT NOT NULL,
      subject TEXT,
      detail TEXT NOT NULL CHECK (json_valid(detail))
    ) STRICT;
    CREATE INDEX gh_audit_at ON gh_audit (at);`,
  },
  {
    version: 5,
    sql: `CREATE TABLE gh_session_revocations (
      kind TEXT NOT NULL CHECK (kind IN ('sid', 'sub', 'psid')),
      value TEXT NOT NULL,
      revoked_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      PRIMARY KEY (kind, value)
    ) STRICT;
    CREATE INDEX gh_session_revocations_expires_at ON gh_session_revocations (expires_at);`,
  },
  {
    // When each revocation was last written, so a refresh reads only what changed (rows already there
    // count as written now). The default 0 is for a process of the version before, still writing.
    version: 6,
    sql: (now) => `ALTER TABLE gh_session_revocations ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;
    UPDATE gh_session_revocations SET stored_at = ${now};
    CREATE INDEX gh_session_revocations_stored_at ON gh_session_revocations (stored_at);`,
  },
]

interface KeyRow {
  kid: string
  alg: KeyRecord['alg']
  state: KeyRecord['state']
  public_jwk: string
  private_jwe: string
  created_at: number
  activates_at: number
  retires_at: number
  remove_at: number
}

interface TokenRow {
  jti: string
  subject: string
  scopes: string
  audience: string
  parent_jti: string | null
  issued_at: number
  expires_at: number
  revoked_at: number | null
  description: string | null
}

/**
 * Keys and tokens in node:sqlite, the embedded default. Creates its tables (`gh_keys`, `gh_tokens`) when
 * missing through versioned migrations recorded in `gatehouse_schema`; touches no other table, so the
 * database can be the one the embedded identity provider uses. Throws {@link SchemaTooNewError} when a newer
 * Gatehouse has migrated the database already.
 *
 * @example
 * ```ts
 * const store = createSQLiteStore(new DatabaseSync('gatehouse.db'))
 * const moved = await store.transitionKey('k-2', 'next', 'current') // false if another instance won
 * ```
 */
export function createSQLiteStore(
  db: DatabaseSync,
  options: SQLiteStoreOptions = {},
): KeyStore & TokenStore & CacheStore & AlertStore & AuditStore & SessionRevocationStore {
  if (!(db instanceof DatabaseSync)) {
    throw new TypeError(`db: expected a node:sqlite DatabaseSync, found ${describe(db)}`)
  }
  const clock = options.clock ?? systemClock
  migrate(db, clock)

  const begin = db.prepare('BEGIN IMMEDIATE')
  const commit = db.prepare('COMMIT')
  const rollback = db.prepare('ROLLBACK')

  const selectCached = db.prepare('SELECT value, fetched_at FROM gh_cache WHERE key = ?')
  const upsertCached = db.prepare(`INSERT INTO gh_cache (key, value, fetched_at) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, fetched_at = excluded.fetched_at`)
  const selectAlerts = db.prepare('SELECT * FROM gh_alerts ORDER BY credential, threshold_seconds')
  const upsertAlert = db.prepare(`INSERT INTO gh_alerts
    (credential, threshold_seconds, expires_at, sent_at, attempts, next_attempt_at, last_error)
    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (credential, threshold_seconds) DO UPDATE SET
    expires_at = excluded.expires_at, sent_at = excluded.sent_at, attempts = excluded.attempts,
    next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error`)
  const deleteAlerts = db.prepare('DELETE FROM gh_alerts WHERE credential = ?')
  const insertSeen = db.prepare(
    'INSERT INTO gh_first_seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING',
  )
  const selectSeen = db.prepare('SELECT seen_at FROM gh_first_seen WHERE key = ?')
  const insertAudit = db.prepare('INSERT INTO gh_audit (at, type, subject, detail) VALUES (?, ?, ?, ?)')
  const pruneAudit = db.prepare('DELETE FROM gh_audit WHERE at < ?')
  // The newest `limit`, handed out oldest first.
  const selectAudit = db.prepare(`SELECT * FROM
    (SELECT * FROM gh_audit WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?) ORDER BY at, id`)
  const selectKeys = db.prepare('SELECT * FROM gh_keys ORDER BY created_at, kid')
  const insertKey = db.prepare(`INSERT INTO gh_keys
    (kid, alg, state, public_jwk, private_jwe, created_at, activates_at, retires_at, remove_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kid) DO NOTHING`)
  const updateKeyState = db.prepare('UPDATE gh_keys SET state = ? WHERE kid = ? AND state = ?')
  const deleteKey = db.prepare('DELETE FROM gh_keys WHERE kid = ?')

  const newestFirst = 'ORDER BY issued_at DESC, jti DESC'
  const insertToken = db.prepare(`INSERT INTO gh_tokens
    (jti, subject, scopes, audience, parent_jti, issued_at, expires_at, revoked_at, description)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING`)
  const selectToken = db.prepare('SELECT * FROM gh_tokens WHERE jti = ?')
  const selectTokens = db.prepare(`SELECT * FROM gh_tokens ${newestFirst}`)
  const selectLiveTokens = db.prepare(`SELECT * FROM gh_tokens WHERE expires_at > ? ${newestFirst}`)
  // UNION (not UNION ALL) drops rows already seen, so a cycle of parent links ends the recursion.
  const selectDescendants = db.prepare(`WITH RECURSIVE descendants (jti) AS (
      SELECT jti FROM gh_tokens WHERE parent_jti = :jti
      UNION
      SELECT child.jti FROM gh_tokens AS child JOIN descendants ON child.parent_jti = descendants.jti
    )
    SELECT gh_tokens.* FROM gh_tokens JOIN descendants USING (jti) WHERE jti <> :jti ${newestFirst}`)
  const revokeToken = db.prepare('UPDATE gh_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL')
  const selectRevoked = db.prepare(`SELECT jti, expires_at FROM gh_tokens
    WHERE revoked_at IS NOT NULL AND expires_at > ? ORDER BY expires_at, jti`)

  // A revocation never shrinks: the later revocation time and the later expiry are kept.
  const upsertSessionRevocation = db.prepare(`INSERT INTO gh_session_revocations
    (kind, value, revoked_at, expires_at, stored_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO UPDATE SET
    revoked_at = max(revoked_at, excluded.revoked_at), expires_at = max(expires_at, excluded.expires_at),
    stored_at = excluded.stored_at`)
  const selectSessionRevocations = db.prepare(`SELECT * FROM gh_session_revocations
    WHERE expires_at > ? AND stored_at >= ? ORDER BY expires_at, kind, value`)
  const selectSessionRevocation = db.prepare(
    'SELECT * FROM gh_session_revocations WHERE kind = ? AND value = ?',
  )
  const pruneSessionRevocations = db.prepare('DELETE FROM gh_session_revocations WHERE expires_at <= ?')

  return {
    async listKeys() {
      return (selectKeys.all() as unknown as KeyRow[]).map(toKey)
    },

    async insertKey(key) {
      checkKeyTimes(key)
      const { changes } = insertKey.run(
        key.kid,
        key.alg,
        key.state,
        JSON.stringify(key.publicJwk),
        key.privateJwe,
        key.createdAt,
        key.activatesAt,
        key.retiresAt,
        key.removeAt,
      )
      return Number(changes) > 0
    },

    async transitionKey(kid, from, to) {
      return Number(updateKeyState.run(to, kid, from).changes) > 0
    },

    async deleteKey(kid) {
      return Number(deleteKey.run(kid).changes) > 0
    },

    async insertToken(token) {
      checkTokenTimes(token)
      // One statement, so the record is written whole or not at all; a taken jti lands as 0 changes.
      const { changes } = insertToken.run(
        token.jti,
        token.subject,
        JSON.stringify(token.scopes),
        token.audience,
        token.parentJti ?? null,
        token.issuedAt,
        token.expiresAt,
        token.revokedAt ?? null,
        token.description ?? null,
      )
      if (Number(changes) === 0) throw new TokenExistsError(token.jti)
    },

    async getToken(jti) {
      const row = selectToken.get(jti) as unknown as TokenRow | undefined
      return row === undefined ? undefined : toToken(row)
    },

    async listTokens({ includeExpired = false, now = Math.floor(clock.now() / 1000) } = {}) {
      const rows = includeExpired ? selectTokens.all() : selectLiveTokens.all(now)
      return (rows as unknown as TokenRow[]).map(toToken)
    },

    async listDescendants(jti) {
      return (selectDescendants.all({ jti }) as unknown as TokenRow[]).map(toToken)
    },

    async revokeTokens(jtis, at) {
      checkTime(at, 'at')
      if (jtis.length === 0) return 0
      begin.run()
      try {
        let changed = 0
        for (const jti of jtis) changed += Number(revokeToken.run(at, jti).changes)
        commit.run()
        return changed
      } catch (error) {
        // A failed COMMIT (SQLITE_BUSY) leaves the transaction open too.
        if (db.isTransaction) rollback.run()
        throw error
      }
    },

    async listRevoked(now) {
      const rows = selectRevoked.all(now) as unknown as Array<{ jti: string; expires_at: number }>
      return rows.map((row) => ({ jti: row.jti, expiresAt: row.expires_at }))
    },

    async revokeSessions(entries) {
      for (const e of entries) checkSessionRevocation(e)
      if (entries.length === 0) return
      const storedAt = Math.floor(clock.now() / 1000)
      begin.run()
      try {
        for (const e of entries)
          upsertSessionRevocation.run(e.kind, e.value, e.revokedAt, e.expiresAt, storedAt)
        commit.run()
      } catch (error) {
        if (db.isTransaction) rollback.run()
        throw error
      }
    },

    async listSessionRevocations(now) {
      checkTime(now, 'now')
      return (
        selectSessionRevocations.all(now, Number.MIN_SAFE_INTEGER) as unknown as SessionRevocationRow[]
      ).map(toStoredSessionRevocation)
    },

    async listSessionRevocationsSince(now, sinceStoredAt) {
      checkTime(now, 'now')
      checkTime(sinceStoredAt, 'sinceStoredAt')
      return (selectSessionRevocations.all(now, sinceStoredAt) as unknown as SessionRevocationRow[]).map(
        toStoredSessionRevocation,
      )
    },

    async getSessionRevocation(kind, value) {
      const row = selectSessionRevocation.get(kind, value) as unknown as SessionRevocationRow | undefined
      return row === undefined ? undefined : toSessionRevocation(row)
    },

    async pruneSessionRevocations(now) {
      checkTime(now, 'now')
      return Number(pruneSessionRevocations.run(now).changes)
    },

    async getCached(key) {
      const row = selectCached.get(key) as { value: string; fetched_at: number } | undefined
      return row === undefined ? undefined : { value: row.value, fetchedAt: row.fetched_at }
    },

    async putCached(key, value, fetchedAt) {
      checkTime(fetchedAt, 'fetchedAt')
      upsertCached.run(key, value, fetchedAt)
    },

    async listAlerts() {
      return (selectAlerts.all() as unknown as AlertRow[]).map(toAlert)
    },

    async putAlert(record) {
      checkAlert(record)
      upsertAlert.run(
        record.credential,
        record.thresholdSeconds,
        record.expiresAt,
        record.sentAt ?? null,
        record.attempts,
        record.nextAttemptAt,
        record.lastError ?? null,
      )
    },

    async deleteAlerts(credential) {
      return Number(deleteAlerts.run(credential).changes)
    },

    async appendAudit(events) {
      for (const e of events) checkAudit(e)
      if (events.length === 0) return
      begin.run()
      try {
        for (const e of events) insertAudit.run(e.at, e.type, e.subject ?? null, JSON.stringify(e.detail))
        commit.run()
      } catch (error) {
        if (db.isTransaction) rollback.run()
        throw error
      }
    },

    async listAudit({ since, limit = 1000 }) {
      checkTime(since, 'since')
      const rows = selectAudit.all(since, limit) as unknown as AuditRow[]
      return rows.map(toAudit)
    },

    async pruneAudit(before) {
      checkTime(before, 'before')
      return Number(pruneAudit.run(before).changes)
    },

    async markSeen(key, at) {
      checkTime(at, 'at')
      // One statement inserts only when absent, so two processes agree on the first time.
      insertSeen.run(key, at)
      return (selectSeen.get(key) as { seen_at: number }).seen_at
    },
  }
}

interface SessionRevocationRow {
  kind: SessionRevocation['kind']
  value: string
  revoked_at: number
  expires_at: number
  stored_at: number
}

function toSessionRevocation(row: SessionRevocationRow): SessionRevocation {
  return { kind: row.kind, value: row.value, revokedAt: row.revoked_at, expiresAt: row.expires_at }
}

function toStoredSessionRevocation(row: SessionRevocationRow): StoredSessionRevocation {
  return { ...toSessionRevocation(row), storedAt: row.stored_at }
}

interface AuditRow {
  at: number
  type: AuditEvent['type']
  subject: string | null
  detail: string
}

function toAudit(row: AuditRow): AuditEvent {
  return {
    at: row.at,
    type: row.type,
    subject: row.subject ?? undefined,
    detail: JSON.parse(row.detail) as AuditEvent['detail'],
  }
}

interface AlertRow {
  credential: string
  threshold_seconds: number
  expires_at: number
  sent_at: number | null
  attempts: number
  next_attempt_at: number
  last_error: string | null
}

function toAlert(row: AlertRow): AlertRecord {
  return {
    credential: row.credential,
    thresholdSeconds: row.threshold_seconds,
    expiresAt: row.expires_at,
    sentAt: row.sent_at ?? undefined,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    lastError: row.last_error ?? undefined,
  }
}

function migrate(db: DatabaseSync, clock: Clock): void {
  const latest = MIGRATIONS.reduce((max, migration) => Math.max(max, migration.version), 0)
  // IMMEDIATE takes the write lock first, so two processes starting on one file cannot both migrate.
  db.exec('BEGIN IMMEDIATE')
  try {
    db.exec(`CREATE TABLE IF NOT EXISTS gatehouse_schema (
      component TEXT NOT NULL,
      version INTEGER NOT NULL,
      applied_at INTEGER NOT NULL,
      PRIMARY KEY (component, version)
    ) STRICT`)
    const rows = db.prepare('SELECT version FROM gatehouse_schema WHERE component = ?').all(COMPONENT)
    const applied = new Set(rows.map((row) => Number(row['version'])))
    const newest = Math.max(0, ...applied)
    if (newest > latest) throw new SchemaTooNewError(newest, latest)
    const record = db.prepare(
      'INSERT INTO gatehouse_schema (component, version, applied_at) VALUES (?, ?, ?)',
    )
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue
      const now = Math.floor(clock.now() / 1000)
      db.exec(typeof migration.sql === 'string' ? migration.sql : migration.sql(now))
      record.run(COMPONENT, migration.version, now)
    }
    db.exec('COMMIT')
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK')
    throw error
  }
}

function toKey(row: KeyRow): KeyRecord {
  return {
    kid: row.kid,
    alg: row.alg,
    state: row.state,
    publicJwk: JSON.parse(row.public_jwk) as Record<string, unknown>,
    privateJwe: row.private_jwe,
    createdAt: row.created_at,
    activatesAt: row.activates_at,
    retiresAt: row.retires_at,
    removeAt: row.remove_at,
  }
}

function toToken(row: TokenRow): TokenRecord {
  return {
    jti: row.jti,
    subject: row.subject,
    scopes: JSON.parse(row.scopes) as string[],
    audience: row.audience,
    parentJti: row.parent_jti ?? undefined,
    issuedAt: row.issued_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at ?? undefined,
    description: row.description ?? undefined,
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'object') return value.constructor?.name ?? 'object'
  return typeof value
}
