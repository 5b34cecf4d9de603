import { decodeProtectedHeader, type JWTVerifyGetKey, jwtVerify } from 'jose'
import type { Clock } from './clock.ts'

/** OIDC Back-Channel Logout 1.0 §2.4: the event a logout token carries. */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'

export type LogoutTokenResult =
  | {
      ok: true
      /** The provider's session id, when the token names one. */
      sid: string | undefined
      /** The user, when the token names one. */
      sub: string | undefined
      jti: string
      /**
       * The sessions the token ends are those signed in at or before this: its `iat` plus the clock
       * leeway (never later than now), so a replay elsewhere cannot end a session begun after it.
       */
      signedInBefore: number
      /** Until when the jti must be remembered to refuse a replay (seconds since the epoch). */
      replayUntil: number
    }
  | { ok: false; reason: string }

export interface LogoutTokenVerifierOptions {
  /** The provider's issuer (`iss`). */
  issuer: string
  /** Gatehouse's client id (`aud`). */
  clientId: string
  /** Asymmetric algorithms accepted (config `provider.algorithms`); HS* and `none` never. */
  algorithms: readonly string[]
  leewaySeconds: number
  clock: Clock
  /** A token issued longer ago than this is refused (bounds how long a jti is remembered). Default 600. */
  maxAgeSeconds?: number
}

const JWT_SHAPE = /^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}$/
const MAX_CHARS = 16_384

/**
 * Verifies an OIDC Back-Channel Logout 1.0 logout token (§2.6) against the provider's keys: signature
 * with an allowed algorithm, `iss`, `aud` = client id, `iat` recent, `exp` when present, `typ`
 * `logout+jwt` when present, a `jti`, the back-channel logout event, a `sid` or a `sub`, and no `nonce`.
 * Replays (the same jti) are the caller's to refuse, until `replayUntil`.
 *
 * @example
 * const verify = createLogoutTokenVerifier({ issuer, clientId, algorithms: ['RS256'], leewaySeconds: 30, clock }, getKey)
 * const r = await verify(form.get('logout_token'))
 */
export function createLogoutTokenVerifier(
  options: LogoutTokenVerifierOptions,
  getKey: JWTVerifyGetKey,
): (token: string) => Promise<LogoutTokenResult> {
  // The config schema allows asymmetric algorithms only; a shared-secret one here is a misuse.
  for (const alg of options.algorithms) {
    if (/^(HS\d+|none)$/i.test(alg))
      throw new TypeError(`logout token algorithms: ${alg} is not an asymmetric algorithm`)
  }
  if (options.algorithms.length === 0)
    throw new TypeError('logout token algorithms: at least one is required')
  const maxAgeSeconds = options.maxAgeSeconds ?? 600
  const algorithms = [...options.algorithms]
  const { clock, leewaySeconds } = options

  return async function verifyLogoutToken(token) {
    if (token.length > MAX_CHARS || !JWT_SHAPE.test(token)) return { ok: false, reason: 'not a JWT' }
    let typ: unknown
    try {
      typ = decodeProtectedHeader(token).typ
    } catch {
      return { ok: false, reason: 'malformed header' }
    }
    // §2.4: explicit typing is recommended; a token typed as something else (an ID token) is refused.
    if (typ !== undefined && !/^(application\/)?logout\+jwt$/i.test(String(typ)))
      return { ok: false, reason: `typ is ${String(typ).slice(0, 40)}, not logout+jwt` }
    let payload: Record<string, unknown>
    try {
      ;({ payload } = await jwtVerify(token, getKey, {
        issuer: options.issuer,
        audience: options.clientId,
        algorithms,
        clockTolerance: leewaySeconds,
        maxTokenAge: maxAgeSeconds,
        currentDate: new Date(clock.now()),
        requiredClaims: ['iat', 'jti', 'events'],
      }))
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'ERR_UNKNOWN'
      return { ok: false, reason: `${code}: ${(err as Error).message}` }
    }
    const now = Math.floor(clock.now() / 1000)
    const iat = payload['iat']
    if (typeof iat !== 'number' || iat > now + leewaySeconds)
      return { ok: false, reason: 'iat is in the future' }
    const jti = payload['jti']
    if (typeof jti !== 'string' || jti === '' || jti.length > 256) return { ok: false, reason: 'jti missing' }
    const events = payload['events']
    const event =
      typeof events === 'object' && events !== null && !Array.isArray(events)
        ? (events as Record<string, unknown>)[BACKCHANNEL_LOGOUT_EVENT]
        : undefined
    if (typeof event !== 'object' || event === null || Array.isArray(event))
      return { ok: false, reason: 'events does not name the back-channel logout event' }
    // §2.6: a logout token with a nonce could be an ID token passed off as one.
    if ('nonce' in payload) return { ok: false, reason: 'nonce present' }
    const sid = payload['sid']
    const sub = payload['sub']
    if (sid !== undefined && (typeof sid !== 'string' || sid === ''))
      return { ok: false, reason: 'sid is not a string' }
    if (sub !== undefined && (typeof sub !== 'string' || sub === ''))
      return { ok: false, reason: 'sub is not a string' }
    if (sid === undefined && sub === undefined) return { ok: false, reason: 'neither sid nor sub' }
    const exp = typeof payload['exp'] === 'number' ? payload['exp'] : 0
    const replayUntil = Math.max(exp, iat + maxAgeSeconds) + leewaySeconds
    return { ok: true, sid, sub, jti, signedInBefore: Math.min(now, iat + leewaySeconds), replayUntil }
  }
}
