import { GatehouseError } from '../core/errors.ts'

/**
 * `TokenStore.insertToken` found a token with the same `jti`; the stored record is left as it was.
 *
 * @example
 * ```ts
 * try {
 *   await store.insertToken(record)
 * } catch (error) {
 *   if (error instanceof TokenExistsError) return retryWithNewJti()
 *   throw error
 * }
 * ```
 */
export class TokenExistsError extends GatehouseError {
  static readonly code = 'ERR_TOKEN_EXISTS'
  override readonly name = 'TokenExistsError'
  readonly jti: string

  constructor(jti: string, options?: { cause?: unknown }) {
    super(
      TokenExistsError.code,
      `a token with jti "${jti}" exists already`,
      'The token could not be stored',
      options,
    )
    this.jti = jti
  }
}

/**
 * The database records a schema version of Gatehouse's tables that this version does not know: it was
 * opened by a newer Gatehouse. Nothing is changed; upgrade, or restore a backup taken before the upgrade.
 */
export class SchemaTooNewError extends GatehouseError {
  static readonly code = 'ERR_STORE_SCHEMA_TOO_NEW'
  override readonly name = 'SchemaTooNewError'
  readonly version: number

  constructor(version: number, known: number) {
    super(
      SchemaTooNewError.code,
      `the database has schema version ${version} of Gatehouse's store; this version knows up to ${known}`,
      'The service is unavailable',
    )
    this.version = version
  }
}

/**
 * The shared store (PostgreSQL) cannot be reached. Verification goes on from memory; writes (issuing
 * tokens, rotating keys, revoking) are refused with this error until it is back. Adapters answer 503.
 */
export class StoreUnavailableError extends GatehouseError {
  static readonly code = 'ERR_STORE_UNAVAILABLE'
  override readonly name = 'StoreUnavailableError'

  constructor(what: string, detail: string, options?: { cause?: unknown }) {
    super(
      StoreUnavailableError.code,
      `${what} is unreachable: ${detail}`,
      'The service is temporarily unavailable',
      options,
    )
  }
}
