import type { DatabaseSync } from 'node:sqlite'
import type { Adapter, AdapterFactory, AdapterPayload } from 'oidc-provider'

export interface SQLiteAdapterOptions {
  /** Clock, Unix epoch milliseconds. Default `Date.now`. */
  now?: () => number
  /** Expired rows are deleted by the first write after this much time since the last sweep. Default 60 000. */
  pruneIntervalMs?: number
}

export interface SQLiteAdapterFactory extends AdapterFactory {
  /** Deletes every expired row now; returns how many. */
  prune(): number
}

// Models whose rows carry a grantId that revokeByGrantId must reach (same set as oidc-provider's memory adapter).
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
])

interface Row {
  payload: string
  consumed_at: number | null
}

/**
 * An oidc-provider adapter persisting every model (sessions, grants, codes, tokens, interactions…) in one
 * node:sqlite table, `idp_oidc_models`, created when missing. Rows past their `expiresIn` are never returned
 * and are swept now and then on writes.
 *
 * @example
 * ```ts
 * const provider = new Provider(issuer, { adapter: createSQLiteAdapter(db), ... })
 * ```
 */
export function createSQLiteAdapter(
  db: DatabaseSync,
  options: SQLiteAdapterOptions = {},
): SQLiteAdapterFactory {
  const now = options.now ?? Date.now
  const pruneIntervalMs = options.pruneIntervalMs ?? 60_000
  if (!Number.isInteger(pruneIntervalMs) || pruneIntervalMs < 0) {
    throw new TypeError(`options.pruneIntervalMs: expected a non-negative integer, found ${pruneIntervalMs}`)
  }

  db.exec(`CREATE TABLE IF NOT EXISTS idp_oidc_models (
    model TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    grant_id TEXT,
    user_code TEXT,
    uid TEXT,
    expires_at INTEGER,
    consumed_at INTEGER,
    PRIMARY KEY (model, id)
  ) STRICT;
  CREATE INDEX IF NOT EXISTS idp_oidc_models_grant_id ON idp_oidc_models (grant_id) WHERE grant_id IS NOT NULL;
  CREATE INDEX IF NOT EXISTS idp_oidc_models_uid ON idp_oidc_models (model, uid) WHERE uid IS NOT NULL;
  CREATE INDEX IF NOT EXISTS idp_oidc_models_user_code ON idp_oidc_models (model, user_code)
    WHERE user_code IS NOT NULL;
  CREATE INDEX IF NOT EXISTS idp_oidc_models_expires_at ON idp_oidc_models (expires_at)
    WHERE expires_at IS NOT NULL;`)

  const live = '(expires_at IS NULL OR expires_at > ?)'
  const upsert = db.prepare(`INSERT INTO idp_oidc_models
    (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
    ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
      user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at, consumed_at = NULL`)
  const findById = db.prepare(
    `SELECT payload, consumed_at FROM idp_oidc_models WHERE model = ? AND id = ? AND ${live}`,
  )
  const findByUid = db.prepare(
    `SELECT payload, consumed_at FROM idp_oidc_models WHERE model = ? AND uid = ? AND ${live}`,
  )
  const findByUserCode = db.prepare(
    `SELECT payload, consumed_at FROM idp_oidc_models WHERE model = ? AND user_code = ? AND ${live}`,
  )
  const consume = db.prepare('UPDATE idp_oidc_models SET consumed_at = ? WHERE model = ? AND id = ?')
  const destroy = db.prepare('DELETE FROM idp_oidc_models WHERE model = ? AND id = ?')
  const revokeByGrantId = db.prepare('DELETE FROM idp_oidc_models WHERE grant_id = ?')
  const prune = db.prepare('DELETE FROM idp_oidc_models WHERE expires_at <= ?')

  let lastPruneMs = now()

  function maybePrune(nowMs: number): void {
    if (nowMs - lastPruneMs < pruneIntervalMs) return
    lastPruneMs = nowMs
    prune.run(nowMs)
  }

  function toPayload(row: Row | undefined): AdapterPayload | undefined {
    if (!row) return undefined
    const payload = JSON.parse(row.payload) as AdapterPayload
    // oidc-provider reads `consumed` (Unix epoch seconds) to detect reuse of codes and refresh tokens.
    if (row.consumed_at !== null) payload['consumed'] = row.consumed_at
    return payload
  }

  function adapterFor(model: string): Adapter {
    return {
      async upsert(id, payload, expiresIn) {
        const nowMs = now()
        const grantId =
          GRANTABLE.has(model) && typeof payload['grantId'] === 'string' ? payload['grantId'] : null
        const userCode = typeof payload['userCode'] === 'string' ? payload['userCode'] : null
        const uid = model === 'Session' && typeof payload['uid'] === 'string' ? payload['uid'] : null
        const expiresAt = typeof expiresIn === 'number' ? nowMs + expiresIn * 1000 : null
        upsert.run(model, id, JSON.stringify(payload), grantId, userCode, uid, expiresAt)
        maybePrune(nowMs)
      },
      async find(id) {
        return toPayload(findById.get(model, id, now()) as Row | undefined)
      },
      async findByUid(uid) {
        return toPayload(findByUid.get(model, uid, now()) as Row | undefined)
      },
      async findByUserCode(userCode) {
        return toPayload(findByUserCode.get(model, userCode, now()) as Row | undefined)
      },
      async consume(id) {
        consume.run(Math.floor(now() / 1000), model, id)
      },
      async destroy(id) {
        destroy.run(model, id)
      },
      async revokeByGrantId(grantId) {
        revokeByGrantId.run(grantId)
      },
    }
  }

  return Object.assign(adapterFor, {
    prune() {
      const nowMs = now()
      lastPruneMs = nowMs
      return Number(prune.run(nowMs).changes)
    },
  })
}
