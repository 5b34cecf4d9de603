import type {
  SessionRevocation,
  SessionRevocationKind,
  SessionRevocationStore,
  StoredSessionRevocation,
} from '../core/ports.ts'

// The session revocation port is the core's (its revocation list reads it); the stores implement it.
export type { SessionRevocation, SessionRevocationKind, SessionRevocationStore, StoredSessionRevocation }

/**
 * Storage ports. The memory implementation serves tests and single-process use; SQLite is the
 * embedded default; PostgreSQL and Redis come with Gatehouse 6. One contract suite
 * (test/contract/) runs against every implementation. Times are seconds since the epoch.
 */

export type KeyState = 'next' | 'current' | 'retired'

/** One of Gatehouse's own signing keys. The private key is stored encrypted, never in the clear. */
export interface KeyRecord {
  kid: string
  alg: 'EdDSA' | 'ES256'
  state: KeyState
  /** The public key as a JWK (with kid, alg, use). */
  publicJwk: Record<string, unknown>
  /** The private key as a JWK, encrypted (compact JWE, dir + A256GCM) with the at-rest key. */
  privateJwe: string
  createdAt: number
  /** When it starts (or started) signing. */
  activatesAt: number
  /** When it stops (or stopped) signing. */
  retiresAt: number
  /** When it stops being published: its retirement plus the longest lifetime of anything it signed. */
  removeAt: number
}

export interface KeyStore {
  listKeys(): Promise<KeyRecord[]>
  /** Insert a key; false when the kid exists already. */
  insertKey(key: KeyRecord): Promise<boolean>
  /**
   * Move a key from `from` to `to` (compare-and-set: false when its state is no longer `from`, e.g.
   * another instance moved it first).
   */
  transitionKey(kid: string, from: KeyState, to: KeyState): Promise<boolean>
  deleteKey(kid: string): Promise<boolean>
}

/** An API token as stored: never the token itself (a JWT signed by the key ring), only its claims. */
export interface TokenRecord {
  jti: string
  subject: string
  scopes: string[]
  audience: string
  /** The token it was minted from, if any. */
  parentJti: string | undefined
  issuedAt: number
  expiresAt: number
  /** Set when revoked. */
  revokedAt: number | undefined
  /** Free text for people (`tokens issue --description`). */
  description: string | undefined
}

/**
 * Last known good copies of what Gatehouse fetches from others (the provider's discovery document and
 * JWKS), so a process that starts while the provider is down still verifies (seed 000).
 */
export interface CacheStore {
  getCached(key: string): Promise<{ value: string; fetchedAt: number } | undefined>
  /** Replace the copy under `key` (atomically: the old copy or the new one, never half of either). */
  putCached(key: string, value: string, fetchedAt: number): Promise<void>
}

export interface TokenStore {
  /** Insert a token record; throws if the jti exists. Atomic: either the whole record is written or nothing. */
  insertToken(token: TokenRecord): Promise<void>
  getToken(jti: string): Promise<TokenRecord | undefined>
  /** Every token, newest first; expired ones only when asked. */
  listTokens(options?: { includeExpired?: boolean; now?: number }): Promise<TokenRecord[]>
  /** Every descendant of `jti` (children, their children…), not including `jti` itself. */
  listDescendants(jti: string): Promise<TokenRecord[]>
  /** Marks these tokens revoked at `at` (those already revoked keep their first time), in one transaction. Returns how many changed. */
  revokeTokens(jtis: readonly string[], at: number): Promise<number>
  /** jti and expiry of every revoked token that has not expired yet at `now` (what verifiers keep in memory). */
  listRevoked(now: number): Promise<Array<{ jti: string; expiresAt: number }>>
}

/**
 * One expiry alert of one credential at one threshold (Gatehouse 5). Kept so that a restart neither
 * sends an alert again nor forgets one that could not be sent.
 */
export interface AlertRecord {
  /** The credential: `<kind>:<name>` as the inventory names it. */
  credential: string
  /** The threshold, in seconds before expiry (`0`: expired). */
  thresholdSeconds: number
  /** The credential's expiry this alert is about; a renewed credential (another expiry) re-arms its thresholds. */
  expiresAt: number
  /** When the webhook accepted it; undefined while it is still to be sent. */
  sentAt: number | undefined
  /** Failed sends so far. */
  attempts: number
  /** A failed send is tried again from this time on. */
  nextAttemptAt: number
  /** Why the last send failed (never the webhook URL, which may carry a secret). */
  lastError: string | undefined
}

export interface AlertStore {
  /** Every alert record, by credential then threshold. */
  listAlerts(): Promise<AlertRecord[]>
  /** Insert, or replace the record of the same credential and threshold. */
  putAlert(record: AlertRecord): Promise<void>
  /** Forget every record of a credential (it was renewed); returns how many went. */
  deleteAlerts(credential: string): Promise<number>
  /** The first time `key` was seen: records `at` when it is new, else returns the stored time unchanged. */
  markSeen(key: string, at: number): Promise<number>
}

/** Security events kept in the audit log (Gatehouse 6). */
/** The security events the audit log keeps (each is also the `event` field of its log line). */
export const AUDIT_TYPES = [
  'sign_in',
  'sign_out',
  'token_issued',
  'token_revoked',
  'session_revoked',
  'key_created',
  'key_rotated',
  'key_removed',
  'rate_limit_tripped',
] as const

export type AuditType = (typeof AUDIT_TYPES)[number]

/** One security event. Never a token, secret or cookie: ids (jti, kid, sid), subjects, reasons. */
export interface AuditEvent {
  /** Seconds since the epoch. */
  at: number
  type: AuditType
  /** Who or what it is about: a user's `sub`, a token's jti, a key's kid, a client address. */
  subject: string | undefined
  /** Flat facts about it. */
  detail: Record<string, string | number | boolean>
}

export interface AuditStore {
  /** Appends events, all or none. */
  appendAudit(events: readonly AuditEvent[]): Promise<void>
  /** Events at or after `since`, oldest first (order of appending among equal times), at most `limit` (default 1000) of the newest. */
  listAudit(options: { since: number; limit?: number }): Promise<AuditEvent[]>
  /** Deletes events older than `before` (retention); returns how many. */
  pruneAudit(before: number): Promise<number>
}
