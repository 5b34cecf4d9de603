import { type JWTVerifyGetKey, jwtVerify } from 'jose'
import type { Clock } from './clock.ts'
import { type Identity, type IdentityMapping, identityFromClaims, scopesFromClaims } from './identity.ts'
import { createTokenCache } from './token-cache.ts'

/** A verified token's identity carries its scopes (`identity.scopes`, empty when it has none). */
export type BearerResult =
  | { ok: true; identity: Identity; expiresAt: number; token: string }
  | { ok: false; code: 'token_expired' | 'invalid_token'; reason: string }

export interface BearerVerifierOptions {
  issuer: string
  /** Accepted audiences (`aud`); with `clientIdClaim`, the `client_id` claim is compared instead (Cognito). */
  audiences: readonly string[]
  /** Cognito access tokens carry `client_id` instead of `aud`. */
  audienceClaim: 'aud' | 'client_id'
  /** Asymmetric algorithms only; HS* and `none` are never accepted for provider tokens. */
  algorithms: readonly string[]
  leewaySeconds: number
  mapping: IdentityMapping
  clock: Clock
  /** Verified tokens kept, keyed by the exact token string, never past their own `exp`. Default 10,000. */
  cacheEntries?: number
  /** Extra claim checks (Cognito: `token_use` must be `access`). */
  requiredClaims?: Record<string, string>
}

export interface BearerVerifier {
  verify(token: string): Promise<BearerResult>
  forget(token: string): void
}

const ALLOWED = new Set([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
])

/** A JWT's compact form: three base64url parts. Anything else is rejected before any crypto. */
const JWT_SHAPE = /^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}$/

/**
 * Verifies provider-issued JWT access tokens presented as `Authorization: Bearer`.
 *
 * @example
 * const verifier = createBearerVerifier({ issuer, audiences: [clientId], audienceClaim: 'aud', algorithms: ['RS256'], … }, getKey)
 */
export function createBearerVerifier(
  options: BearerVerifierOptions,
  getKey: JWTVerifyGetKey,
): BearerVerifier {
  for (const alg of options.algorithms) {
    if (!ALLOWED.has(alg))
      throw new TypeError(`bearer algorithms: ${alg} is not an accepted asymmetric algorithm`)
  }
  if (options.algorithms.length === 0) throw new TypeError('bearer algorithms: at least one is required')
  const { clock, mapping } = options
  const cacheEntries = options.cacheEntries ?? 10_000
  const cache = createTokenCache<{ identity: Identity; expiresAt: number }>(cacheEntries)
  const algorithms = [...options.algorithms]
  const audiences = [...options.audiences]

  async function verifySlow(token: string): Promise<BearerResult> {
    let payload: Record<string, unknown>
    try {
      ;({ payload } = await jwtVerify(token, getKey, {
        issuer: options.issuer,
        audience: options.audienceClaim === 'aud' ? audiences : undefined,
        algorithms,
        clockTolerance: options.leewaySeconds,
        currentDate: new Date(clock.now()),
        requiredClaims: ['exp', 'sub'],
      }))
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'ERR_UNKNOWN'
      if (code === 'ERR_JWT_EXPIRED') return { ok: false, code: 'token_expired', reason: 'token expired' }
      return { ok: false, code: 'invalid_token', reason: `${code}: ${(err as Error).message}` }
    }
    if (options.audienceClaim === 'client_id') {
      const cid = payload['client_id']
      if (typeof cid !== 'string' || !audiences.includes(cid)) {
        return { ok: false, code: 'invalid_token', reason: 'client_id claim does not match' }
      }
    }
    for (const [k, v] of Object.entries(options.requiredClaims ?? {})) {
      if (payload[k] !== v) return { ok: false, code: 'invalid_token', reason: `claim ${k} is not ${v}` }
    }
    const claimed = identityFromClaims(payload, mapping)
    if (claimed === undefined) return { ok: false, code: 'invalid_token', reason: 'no sub claim' }
    const identity: Identity = { ...claimed, scopes: scopesFromClaims(payload) }
    const expiresAt = payload['exp'] as number
    cache.set(token, { identity, expiresAt })
    return { ok: true, identity, expiresAt, token }
  }

  return {
    async verify(token) {
      const hit = cache.get(token)
      if (hit !== undefined) {
        if (hit.expiresAt + options.leewaySeconds > clock.now() / 1000) {
          return { ok: true, identity: hit.identity, expiresAt: hit.expiresAt, token }
        }
        cache.delete(token)
        return { ok: false, code: 'token_expired', reason: 'token expired' }
      }
      if (token.length > 16_384 || !JWT_SHAPE.test(token)) {
        return { ok: false, code: 'invalid_token', reason: 'not a JWT' }
      }
      return verifySlow(token)
    },
    forget(token) {
      cache.delete(token)
    },
  }
}
