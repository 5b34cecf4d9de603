import { SignJWT } from 'jose'
import type { Clock } from './clock.ts'
import type { Identity } from './identity.ts'
import type { AssertionSigner } from './ports.ts'

/** The request header carrying the identity assertion to the upstream. */
export const ASSERTION_HEADER = 'x-gatehouse-assertion'
/**
 * The JOSE header `typ` of an identity assertion: Gatehouse's API tokens, signed by the same keys, are
 * typed `JWT`, so neither passes for the other where `typ` is checked (RFC 8725 §3.11).
 */
export const ASSERTION_TYP = 'gatehouse-assertion+jwt'
/** The `token_use` claim of an identity assertion, for verifiers that read claims more easily than headers. */
export const ASSERTION_TOKEN_USE = 'gatehouse-assertion'

export interface AssertionSignerOptions {
  /** `iss`: Gatehouse's public origin. */
  issuer: string
  /** Lifetime of an assertion (`exp - iat`); one is signed again once less than half of it is left. */
  ttlSeconds: number
  clock: Clock
  /** The key that signs now (the key ring's `signingKey()`): its public half is at /.well-known/jwks.json. */
  signingKey: () => { kid: string; alg: string; key: CryptoKey }
}

interface Signed {
  token: string
  /** Past this, sign a new one: half the lifetime is gone. */
  renewAtMs: number
}

/**
 * Signs identity assertions, the JWT sent upstream as `X-Gatehouse-Assertion`: `iss`, `aud`, `sub`,
 * `email`, `groups`, `preferred_username`, `idp` (with several providers), `iat`, `exp` and `token_use`, typed
 * {@link ASSERTION_TYP}. Signing costs a signature, so an assertion is kept per identity object (sessions
 * and tokens are cached, so their identity is too) and audience, and reused until less than half its
 * lifetime is left: a cache hit is returned as a string, without a promise.
 *
 * @example
 * const assertionFor = createAssertionSigner({ issuer: 'https://app.example.com', ttlSeconds: 60, clock, signingKey: () => ring.signingKey() })
 * const token = await assertionFor(identity, 'https://app.example.com')
 */
export function createAssertionSigner(options: AssertionSignerOptions): AssertionSigner {
  const { issuer, ttlSeconds, clock, signingKey } = options
  if (!(Number.isInteger(ttlSeconds) && ttlSeconds >= 2))
    throw new TypeError('assertion ttlSeconds: an integer of at least 2 is required')
  const signed = new WeakMap<Identity, Map<string, Signed>>()
  const signing = new WeakMap<Identity, Map<string, Promise<string>>>()

  async function sign(identity: Identity, audience: string, nowMs: number): Promise<string> {
    const key = signingKey()
    const iat = Math.floor(nowMs / 1000)
    const claims: Record<string, unknown> = { token_use: ASSERTION_TOKEN_USE }
    if (identity.email !== undefined) claims['email'] = identity.email
    claims['groups'] = identity.groups
    if (identity.preferredUsername !== undefined) claims['preferred_username'] = identity.preferredUsername
    // With several providers, `sub` is unique only together with the provider that issued it.
    if (identity.provider !== undefined) claims['idp'] = identity.provider
    return new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ASSERTION_TYP })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(identity.sub)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttlSeconds)
      .sign(key.key)
  }

  return function assertionFor(identity, audience) {
    const nowMs = clock.now()
    const hit = signed.get(identity)?.get(audience)
    if (hit !== undefined && nowMs < hit.renewAtMs) return hit.token
    // One signature per identity and audience, however many requests ask at once.
    const waiting = signing.get(identity) ?? new Map<string, Promise<string>>()
    const pending = waiting.get(audience)
    if (pending !== undefined) return pending
    signing.set(identity, waiting)
    const run = sign(identity, audience, nowMs).then(
      (token) => {
        waiting.delete(audience)
        const byAudience = signed.get(identity) ?? new Map<string, Signed>()
        byAudience.set(audience, { token, renewAtMs: nowMs + (ttlSeconds * 1000) / 2 })
        signed.set(identity, byAudience)
        return token
      },
      (err: unknown) => {
        waiting.delete(audience)
        throw err
      },
    )
    waiting.set(audience, run)
    return run
  }
}
