import type { Identity } from './identity.ts'

/**
 * The ports the core talks through. The core never does I/O itself: adapters and `src/oidc`,
 * `src/store` implement these.
 */

/** Tokens from the provider after a code exchange or a refresh. Times in seconds since the epoch. */
export interface TokenResult {
  accessToken: string
  accessTokenExpiresAt: number
  refreshToken?: string | undefined
  idToken?: string | undefined
  /** Claims of the verified ID token; undefined when a refresh returned no ID token. */
  claims?: Record<string, unknown> | undefined
}

/**
 * The relying-party side of OpenID Connect. Implementations throw `ProviderRejectedError` when the
 * provider refused (invalid_grant…), `ProviderUnavailableError` when it could not be reached or
 * answered 5xx, `ProviderResponseError` when its answer failed a check (nonce, signature…).
 */
export interface OIDCPort {
  authorizationUrl(params: { state: string; nonce: string; codeChallenge: string }): Promise<string>
  exchangeCode(
    callbackParams: URLSearchParams,
    expected: { state: string; nonce: string; codeVerifier: string },
  ): Promise<TokenResult>
  refresh(refreshToken: string): Promise<TokenResult>
  /** Where to send the browser after Gatehouse's own sign-out, or undefined when the provider has no logout. */
  endSessionUrl(params: {
    /** Sent only where the provider is configured to need it (`provider.logout_id_token_hint`). */
    idTokenHint?: string | undefined
    /** The user signing out (their `sub`), as RP-Initiated Logout 1.0 §2 `logout_hint`. */
    logoutHint?: string | undefined
    postLogoutRedirectUri: string
  }): Promise<string | undefined>
  /** Best effort token revocation (RFC 7009); resolves whether or not the provider supports it. */
  revoke(token: string): Promise<void>
}

/** Which limit a request counts against. */
export type RateBucket = 'client' | 'credential' | 'auth_endpoint'

/**
 * Rate limits (seed 003: a retry storm from old clients drowned the auth service). Memory in one
 * process; shared (Redis) across instances later, behind the same port.
 */
export interface RateLimiter {
  /** Take one point from `key` in `bucket`; a refusal says when to come back. */
  consume(
    bucket: RateBucket,
    key: string,
  ): Promise<{ allowed: true } | { allowed: false; retryAfterSeconds: number }>
}

/** Remembers one-time values (sign-in `state`) until they expire. */
export interface OneTimeStore {
  /** True the first time `key` is consumed before `expiresAtMs`; false on every later try. */
  consume(key: string, expiresAtMs: number): Promise<boolean>
}

/** What a session revocation names (Gatehouse 8). */
export type SessionRevocationKind = 'sid' | 'sub' | 'psid'

/**
 * One revocation of browser sessions. `sid`: the one Gatehouse session with that id. `sub` (sign out
 * everywhere) and `psid` (the provider's session id, back-channel and front-channel logout): every session
 * of that user, or of that provider session, signed in at or before `revokedAt`. Seconds since the epoch.
 */
export interface SessionRevocation {
  kind: SessionRevocationKind
  /** The session id, the user's `sub`, or the provider's `sid`. */
  value: string
  revokedAt: number
  /** No session it covers can live past this (session max_ttl): then it is forgotten. */
  expiresAt: number
}

/** A revocation as listed by the store: `storedAt` is the store's clock (seconds) when it was last written. */
export interface StoredSessionRevocation extends SessionRevocation {
  storedAt: number
}

/**
 * Browser sessions signed out (Gatehouse 8): by session id, by user (`sub`) or by provider session
 * (`psid`). Instances keep the list in memory and reload it from here; entries go once no session they
 * cover can live any more. Implemented by the stores in `src/store`.
 */
export interface SessionRevocationStore {
  /**
   * Stores these revocations, all or none. For a kind and value stored already, the later `revokedAt`
   * and the later `expiresAt` are kept (a revocation never shrinks).
   */
  revokeSessions(entries: readonly SessionRevocation[]): Promise<void>
  /** Every revocation still in force at `now` (`expiresAt > now`), by expiresAt, then kind and value. */
  listSessionRevocations(now: number): Promise<StoredSessionRevocation[]>
  /**
   * The revocations in force at `now` stored (or raised) at or after `sinceStoredAt`, in the same order:
   * what a periodic refresh reads instead of the whole list.
   */
  listSessionRevocationsSince(now: number, sinceStoredAt: number): Promise<StoredSessionRevocation[]>
  /** One revocation, to confirm one another instance says it made; undefined when there is none. */
  getSessionRevocation(kind: SessionRevocationKind, value: string): Promise<SessionRevocation | undefined>
  /** Forgets revocations no longer in force at `now`; returns how many. */
  pruneSessionRevocations(now: number): Promise<number>
}

/**
 * The session revocation list as the core sees it: a synchronous lookup in memory on every request, and
 * a write that stores a revocation and tells the other instances.
 */
export interface SessionRevocations {
  /** True when the session was signed out (by id, by user or by provider session). No I/O. */
  isRevoked(session: {
    sid: string
    identity: { sub: string }
    providerSid?: string | undefined
    signedInAt: number
  }): boolean
  /**
   * Refuse these sessions from now on: here at once, on every instance once stored. `expiresAt` defaults
   * to `revokedAt` + session max_ttl. Resolves with what was stored; rejects when the store could not take it
   * (then it holds on this instance, and is stored at the next reload that reaches the store).
   */
  revoke(
    entries: ReadonlyArray<{
      kind: SessionRevocationKind
      value: string
      expiresAt?: number | undefined
      /** For `sub` and `psid`: sessions signed in at or before this are refused. Default (and at most) now. */
      revokedAt?: number | undefined
    }>,
  ): Promise<SessionRevocation[]>
}

/**
 * Signs the identity assertion sent upstream as `X-Gatehouse-Assertion` (src/core/assertion.ts) for this
 * identity and audience: the string itself while a signed one is still fresh (no promise on the hot
 * path), else a promise of a new one.
 */
export type AssertionSigner = (identity: Identity, audience: string) => string | Promise<string>

/** A pino-compatible logger subset. Never pass a token, secret or cookie value. */
export interface Logger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }
