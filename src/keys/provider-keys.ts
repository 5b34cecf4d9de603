import { createRemoteJWKSet, type JWTVerifyGetKey } from 'jose'

export interface ProviderKeysOptions {
  jwksUri: string
  /** Each fetch of the JWKS gives up after this long. Default 5,000 ms. */
  timeoutMs?: number
  /** An unknown `kid` triggers at most one refetch per this period. Default 30,000 ms. */
  cooldownMs?: number
  /** Keys are refetched after this age. Default 10 minutes. */
  maxAgeMs?: number
}

/**
 * The identity provider's signing keys, fetched lazily and cached in memory; a burst of unknown
 * `kid`s becomes at most one fetch per cooldown (jose's remote JWKS does the single-flight).
 * Gatehouse 3 replaces this with a persisted, stale-if-error cache behind the same getter.
 */
export function createProviderKeys(options: ProviderKeysOptions): JWTVerifyGetKey {
  return createRemoteJWKSet(new URL(options.jwksUri), {
    timeoutDuration: options.timeoutMs ?? 5_000,
    cooldownDuration: options.cooldownMs ?? 30_000,
    cacheMaxAge: options.maxAgeMs ?? 600_000,
  })
}
