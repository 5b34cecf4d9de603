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
