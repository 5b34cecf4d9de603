import { decodeJwt, type JWTVerifyGetKey, jwtVerify } from 'jose'
import type { Clock } from './clock.ts'
import { isCanonicalCompact } from './encoding.ts'
import { type Identity, type IdentityMapping, identityFromClaims, scopesFromClaims } from './identity.ts'
import type { Logger } from './ports.ts'
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
  /**
   * The JOSE header `typ` (RFC 9068 §2.1, §4). `lenient` (default): `at+jwt`, `JWT` or none pass, as many
   * providers type access tokens `JWT` or not at all; `strict`: only `at+jwt`. Any other type is refused.
   */
  accessTokenTyp?: 'lenient' | 'strict'
  /**
   * The client id, when `audiences` was not configured: a token whose only audience is the client id is
   * an ID token's shape (OIDC Core §2) and is refused, unless its header says `at+jwt`.
   */
  idTokenAudience?: string | undefined
  /** Hears (at debug) of a claim in `mapping.claimHeaders` that cannot be a header value. */
  log?: Logger | undefined
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

const AT_JWT = new Set(['at+jwt', 'application/at+jwt'])
const LENIENT_TYP = new Set([...AT_JWT, 'jwt', 'application/jwt'])
/** Claims only an ID token carries (OIDC Core §2, §3.1.3.6, §3.3.2.11). */
const ID_TOKEN_CLAIMS = ['nonce', 'at_hash', 'c_hash'] as const

/**
 * Why a verified token is an ID token (or of another type) rather than an access token; undefined when
 * it may be an access token.
 */
function notAnAccessToken(
  typ: unknown,
  payload: Record<string, unknown>,
  options: Pick<BearerVerifierOptions, 'accessTokenTyp' | 'idTokenAudience'>,
): string | undefined {
  // RFC 9068 §2.1: the media type is compared case-insensitively.
  const t = typeof typ === 'string' ? typ.toLowerCase() : undefined
  if (t !== undefined && !LENIENT_TYP.has(t)) return `typ ${JSON.stringify(typ)} is not at+jwt`
  if (options.accessTokenTyp === 'strict' && (t === undefined || !AT_JWT.has(t)))
    return `typ ${t === undefined ? 'missing' : JSON.stringify(typ)} is not at+jwt (access_token_typ: strict)`
  // Keycloak types its tokens in the payload too: `ID` for ID tokens, `Bearer` for access tokens, which
  // before Keycloak 25 also carried the sign-in's nonce.
  const keycloakTyp = payload['typ']
  if (keycloakTyp === 'ID') return 'claim typ is ID'
  for (const claim of ID_TOKEN_CLAIMS) {
    if (payload[claim] !== undefined && !(claim === 'nonce' && keycloakTyp === 'Bearer'))
      return `it carries ${claim}`
  }
  const aud = payload['aud']
  const only = Array.isArray(aud) && aud.length === 1 ? aud[0] : aud
  if (
    options.idTokenAudience !== undefined &&
    only === options.idTokenAudience &&
    (t === undefined || !AT_JWT.has(t))
  ) {
    return 'its only audience is the client id (set provider.audiences to accept such tokens)'
  }
  return undefined
}

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
    let typ: unknown
    try {
      ;({
        payload,
        protectedHeader: { typ },
      } = await jwtVerify(token, getKey, {
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
    const idToken = notAnAccessToken(typ, payload, options)
    if (idToken !== undefined) {
      return { ok: false, code: 'invalid_token', reason: `id_token_as_access_token: ${idToken}` }
    }
    for (const [k, v] of Object.entries(options.requiredClaims ?? {})) {
      if (payload[k] !== v) return { ok: false, code: 'invalid_token', reason: `claim ${k} is not ${v}` }
    }
    const claimed = identityFromClaims(payload, mapping, options.log)
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
      // A sibling spelling of a valid signature would verify too, and miss every exact-string cache.
      if (!isCanonicalCompact(token, 3))
        return { ok: false, code: 'invalid_token', reason: 'not canonical base64url' }
      return verifySlow(token)
    },
    forget(token) {
      cache.delete(token)
    },
  }
}

/**
 * Bearer tokens with a providers list (docs/providers.md): each token goes to the verifier of the
 * provider its `iss` names (several with the same issuer are tried in order), among those `accepted`;
 * the identity it yields names that provider. A token of any other issuer is refused before any crypto.
 */
export function createBearerByIssuer(
  providers: ReadonlyArray<{ name: string; issuer: string; verifier: BearerVerifier }>,
  accepted?: ReadonlySet<string> | undefined,
): BearerVerifier {
  const byIssuer = new Map<string, Array<{ name: string; verifier: BearerVerifier }>>()
  for (const p of providers) {
    if (accepted !== undefined && !accepted.has(p.name)) continue
    const list = byIssuer.get(p.issuer) ?? []
    list.push(p)
    byIssuer.set(p.issuer, list)
  }
  // One identity object per verified one, so identity headers and assertions stay cached per token.
  const named = new WeakMap<Identity, Identity>()
  const withProvider = (identity: Identity, name: string): Identity => {
    let out = named.get(identity)
    if (out === undefined) {
      out = { ...identity, provider: name }
      named.set(identity, out)
    }
    return out
  }
  // Which providers a token seen before is for: a repeat costs a lookup, not a base64 and JSON decode.
  const seen = createTokenCache<Array<{ name: string; verifier: BearerVerifier }>>(10_000, {
    maxBytes: 8_000_000,
  })
  return {
    async verify(token) {
      let candidates = seen.get(token)
      if (candidates === undefined) {
        let iss: unknown
        try {
          iss = decodeJwt(token).iss
        } catch {
          return { ok: false, code: 'invalid_token', reason: 'not a JWT' }
        }
        candidates = typeof iss === 'string' ? byIssuer.get(iss) : undefined
        if (candidates !== undefined) seen.set(token, candidates)
      }
      if (candidates === undefined)
        return { ok: false, code: 'invalid_token', reason: 'issuer is not a provider accepted here' }
      let last: BearerResult | undefined
      for (const { name, verifier } of candidates) {
        const r = await verifier.verify(token)
        if (r.ok) return { ...r, identity: withProvider(r.identity, name) }
        last = r
      }
      return last!
    },
    forget(token) {
      seen.delete(token)
      for (const list of byIssuer.values()) for (const { verifier } of list) verifier.forget(token)
    },
  }
}
