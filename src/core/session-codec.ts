import { EncryptJWT, jwtDecrypt } from 'jose'
import type { Clock } from './clock.ts'
import { clearCookie, readCookie, serializeCookie } from './cookies.ts'
import { base64url, isCanonicalCompact, utf8 } from './encoding.ts'
import type { Identity } from './identity.ts'
import { createTokenCache } from './token-cache.ts'

/** A signed-in browser's session, kept encrypted in its cookie. Times are in seconds since the epoch. */
export interface Session {
  /** Random id: lets a session be revoked or single-flighted without reading its tokens. */
  sid: string
  identity: Identity
  signedInAt: number
  /** When this cookie stops being accepted. */
  expiresAt: number
  /** The absolute end of the session (sign-in + session max_ttl); refreshes never extend past it. */
  maxExpiresAt: number
  accessToken?: string | undefined
  accessTokenExpiresAt?: number | undefined
  refreshToken?: string | undefined
  idToken?: string | undefined
  /**
   * The provider's session id (the ID token's `sid`), which back-channel and front-channel logout name.
   * Absent when the provider sends none, and in sessions signed in before Gatehouse 8 until a refresh
   * brings an ID token with one.
   */
  providerSid?: string | undefined
}

export type SessionReadResult =
  | { ok: true; session: Session; token: string }
  | {
      ok: false
      reason: 'missing' | 'malformed' | 'undecryptable' | 'expired' | 'revoked'
      /** How many times this exact cookie value was refused before (0 the first time). */
      repeats?: number
    }

export interface SessionCodecOptions {
  /** Cookie secrets, at least 32 characters each. The first encrypts; all decrypt (rotation). */
  secrets: readonly string[]
  /** Base cookie name; chunks are `<name>.1`, `<name>.2`, … */
  cookieName: string
  secure: boolean
  /**
   * Config `session.cookie_domain`: the session cookie (and its chunks) go to every host under it, so one
   * sign-in serves every app there. Absent: host-only (`__Host-` over https).
   */
  domain?: string | undefined
  clock: Clock
  /** Decrypted sessions kept in memory, keyed by the exact cookie value. Default 10,000. */
  cacheEntries?: number
  /** Characters per cookie before chunking. Default 3,800 (browsers allow ~4,096 bytes per cookie). */
  chunkSize?: number
  /** Most chunks accepted; more is rejected as malformed. Default 5. */
  maxChunks?: number
}

export interface SessionCodec {
  readonly cookieName: string
  read(cookieHeader: string | undefined): Promise<SessionReadResult>
  /** Set-Cookie values for `session`; also clears chunk cookies the previous value used and this one does not. */
  write(session: Session, cookieHeader?: string): Promise<string[]>
  /** Set-Cookie values that delete the session cookie and every chunk present in the header. */
  clear(cookieHeader: string | undefined): string[]
  /** Drop a cached session (after sign-out or revocation). */
  forget(token: string): void
  /**
   * Refuse this exact cookie value from now on, for `reason` (a revoked or provider-ended session): it
   * leaves the cache, and each later read of it is a lookup, no crypto, counted as a repeat.
   */
  refuse(token: string, reason: 'revoked' | 'expired'): void
  /**
   * Synchronous and cheap (no crypto): does the header carry a session cookie value that was already
   * refused? For load shedding, which must classify a request before any work.
   */
  wasRefused(cookieHeader: string | undefined): boolean
  /** Encrypt arbitrary short-lived data (the per-attempt sign-in state). */
  seal(payload: Record<string, unknown>, expiresAt: number): Promise<string>
  unseal(value: string): Promise<Record<string, unknown> | undefined>
}

const CHUNK_SEPARATOR = '~'

async function deriveKey(secret: string, purpose: string): Promise<{ kid: string; key: Uint8Array }> {
  const ikm = await crypto.subtle.importKey('raw', utf8(secret), 'HKDF', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: utf8('gatehouse'), info: utf8(purpose) },
    ikm,
    256,
  )
  const key = new Uint8Array(bits)
  const id = new Uint8Array(await crypto.subtle.digest('SHA-256', key))
  return { kid: base64url(id.subarray(0, 6)), key }
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string')
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string')
  )
}

function toSession(p: Record<string, unknown>): Session | undefined {
  if (p['v'] !== 1) return undefined
  const { sid, sub, usr, sia, exp, mx } = p
  if (typeof sid !== 'string' || typeof sub !== 'string' || typeof usr !== 'string') return undefined
  if (typeof sia !== 'number' || typeof exp !== 'number' || typeof mx !== 'number') return undefined
  const grp = p['grp'] ?? []
  if (!isStringArray(grp)) return undefined
  const str = (k: string) => (typeof p[k] === 'string' ? (p[k] as string) : undefined)
  const clm = p['clm']
  if (clm !== undefined && !isStringRecord(clm)) return undefined
  return {
    sid,
    identity: {
      sub,
      user: usr,
      email: str('em'),
      groups: grp,
      preferredUsername: str('pun'),
      name: str('nm'),
      ...(clm === undefined ? {} : { claims: clm }),
      ...(typeof p['idp'] === 'string' ? { provider: p['idp'] } : {}),
    },
    signedInAt: sia,
    expiresAt: exp,
    maxExpiresAt: mx,
    accessToken: str('at'),
    accessTokenExpiresAt: typeof p['ate'] === 'number' ? (p['ate'] as number) : undefined,
    refreshToken: str('rt'),
    idToken: str('it'),
    providerSid: str('psid'),
  }
}

/**
 * Sessions as encrypted, authenticated cookies (JWE, `dir` + `A256GCM`, keys derived with HKDF from
 * the configured secrets). Decrypted sessions are cached by the exact cookie value, so a browser's
 * second request costs a Map lookup and an expiry check.
 *
 * @example
 * const codec = await createSessionCodec({ secrets: [process.env.SECRET], cookieName: '__Host-gatehouse', secure: true, clock })
 */
export async function createSessionCodec(options: SessionCodecOptions): Promise<SessionCodec> {
  if (options.secrets.length === 0) throw new TypeError('session secrets: at least one is required')
  for (const s of options.secrets) {
    if (typeof s !== 'string' || s.length < 32)
      throw new TypeError('session secrets: each must be at least 32 characters')
  }
  const { cookieName, secure, clock } = options
  // RFC 6265bis §4.1.3.2: a __Host- cookie with a Domain attribute is refused by browsers.
  if (options.domain !== undefined && cookieName.startsWith('__Host-'))
    throw new TypeError('session cookie: a __Host- cookie cannot have a Domain (use __Secure-)')
  const cacheEntries = options.cacheEntries ?? 10_000
  const chunkSize = options.chunkSize ?? 3_800
  const maxChunks = options.maxChunks ?? 5
  const sessionKeys = await Promise.all(options.secrets.map((s) => deriveKey(s, 'session cookie v1')))
  const stateKeys = await Promise.all(options.secrets.map((s) => deriveKey(s, 'sign-in state v1')))
  const byKid = (keys: typeof sessionKeys) => new Map(keys.map((k) => [k.kid, k.key]))
  const sessionKeyByKid = byKid(sessionKeys)
  const stateKeyByKid = byKid(stateKeys)
  const cache = createTokenCache<Session>(cacheEntries)
  type Refusal = 'malformed' | 'undecryptable' | 'expired' | 'revoked'
  // Bounded in characters too (8 MB): refused values are whatever clients send.
  const refused = createTokenCache<{ reason: Refusal; repeats: number }>(cacheEntries, {
    maxBytes: 8_000_000,
  })
  function refuse(token: string, reason: Refusal): SessionReadResult {
    refused.set(token, { reason, repeats: 0 })
    return { ok: false, reason, repeats: 0 }
  }

  const keyGetter = (map: Map<string, Uint8Array>) => (header: { kid?: string | undefined }) => {
    const key = header.kid === undefined ? undefined : map.get(header.kid)
    if (key === undefined) throw new Error('unknown key id')
    return key
  }
  const getSessionKey = keyGetter(sessionKeyByKid)
  const getStateKey = keyGetter(stateKeyByKid)
  const decryptOptions = () => ({
    keyManagementAlgorithms: ['dir'],
    contentEncryptionAlgorithms: ['A256GCM'],
    currentDate: new Date(clock.now()),
  })

  function readToken(header: string | undefined): string | undefined | null {
    const first = readCookie(header, cookieName)
    if (first === undefined || first === '') return undefined
    const sep = first.indexOf(CHUNK_SEPARATOR)
    if (sep === -1) return first.length <= chunkSize ? first : null
    const count = Number(first.slice(0, sep))
    if (!Number.isInteger(count) || count < 2 || count > maxChunks) return null
    let token = first.slice(sep + 1)
    for (let i = 1; i < count; i++) {
      const part = readCookie(header, `${cookieName}.${i}`)
      if (part === undefined || part.length > chunkSize) return null
      token += part
    }
    return token
  }

  function remember(token: string, session: Session) {
    cache.set(token, session)
  }

  const attrs = { secure, domain: options.domain }

  return {
    cookieName,

    async read(header) {
      const token = readToken(header)
      if (token === undefined) return { ok: false, reason: 'missing' }
      if (token === null) return { ok: false, reason: 'malformed' }
      const nowSeconds = clock.now() / 1000
      const hit = cache.get(token)
      if (hit !== undefined) {
        if (hit.expiresAt > nowSeconds) return { ok: true, session: hit, token }
        cache.delete(token)
        return refuse(token, 'expired')
      }
      // Seed 003: a client sending the same bad cookie again costs a lookup, no crypto. Refusals do
      // not change with time (an expired or undecryptable value stays so), so the entry needs no expiry.
      const known = refused.get(token)
      if (known !== undefined) {
        known.repeats++
        return { ok: false, reason: known.reason, repeats: known.repeats }
      }
      // Before any crypto: a sibling spelling of a valid tag would decrypt, and miss both caches.
      if (!isCanonicalCompact(token, 5)) return refuse(token, 'malformed')
      let payload: Record<string, unknown>
      try {
        payload = (await jwtDecrypt(token, getSessionKey, decryptOptions())).payload
      } catch (err) {
        const code = (err as { code?: string }).code
        return refuse(token, code === 'ERR_JWT_EXPIRED' ? 'expired' : 'undecryptable')
      }
      const session = toSession(payload)
      if (session === undefined) return refuse(token, 'malformed')
      if (session.expiresAt <= nowSeconds) return refuse(token, 'expired')
      remember(token, session)
      return { ok: true, session, token }
    },

    async write(session, header) {
      const { identity: id } = session
      const claims: Record<string, unknown> = { v: 1, sid: session.sid, sub: id.sub, usr: id.user }
      if (id.email !== undefined) claims['em'] = id.email
      if (id.groups.length > 0) claims['grp'] = id.groups
      if (id.preferredUsername !== undefined) claims['pun'] = id.preferredUsername
      if (id.name !== undefined) claims['nm'] = id.name
      // identity.headers_from_claims: only the configured claims, each at most 1 KB (docs/configuration.md).
      if (id.claims !== undefined) claims['clm'] = id.claims
      if (id.provider !== undefined) claims['idp'] = id.provider
      claims['sia'] = session.signedInAt
      claims['mx'] = session.maxExpiresAt
      if (session.accessToken !== undefined) claims['at'] = session.accessToken
      if (session.accessTokenExpiresAt !== undefined) claims['ate'] = session.accessTokenExpiresAt
      if (session.refreshToken !== undefined) claims['rt'] = session.refreshToken
      if (session.idToken !== undefined) claims['it'] = session.idToken
      if (session.providerSid !== undefined) claims['psid'] = session.providerSid
      const current = sessionKeys[0]!
      const token = await new EncryptJWT(claims)
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: current.kid })
        .setIssuedAt(Math.floor(clock.now() / 1000))
        .setExpirationTime(session.expiresAt)
        .encrypt(current.key)
      const maxAgeSeconds = session.expiresAt - Math.floor(clock.now() / 1000)
      const out: string[] = []
      let count = 1
      if (token.length <= chunkSize) {
        out.push(serializeCookie(cookieName, token, { ...attrs, maxAgeSeconds }))
      } else {
        count = Math.ceil(token.length / chunkSize)
        if (count > maxChunks) throw new RangeError(`session too large: ${count} chunks (max ${maxChunks})`)
        for (let i = 0; i < count; i++) {
          const part = token.slice(i * chunkSize, (i + 1) * chunkSize)
          const name = i === 0 ? cookieName : `${cookieName}.${i}`
          const value = i === 0 ? `${count}${CHUNK_SEPARATOR}${part}` : part
          out.push(serializeCookie(name, value, { ...attrs, maxAgeSeconds }))
        }
      }
      for (let i = count; i < maxChunks; i++) {
        if (readCookie(header, `${cookieName}.${i}`) !== undefined)
          out.push(clearCookie(`${cookieName}.${i}`, attrs))
      }
      remember(token, session)
      return out
    },

    clear(header) {
      const out = [clearCookie(cookieName, attrs)]
      for (let i = 1; i < maxChunks; i++) {
        if (readCookie(header, `${cookieName}.${i}`) !== undefined)
          out.push(clearCookie(`${cookieName}.${i}`, attrs))
      }
      return out
    },

    forget(token) {
      cache.delete(token)
    },

    refuse(token, reason) {
      cache.delete(token)
      refused.set(token, { reason, repeats: 0 })
    },

    wasRefused(header) {
      const token = readToken(header)
      return typeof token === 'string' && refused.get(token) !== undefined
    },

    async seal(payload, expiresAt) {
      const current = stateKeys[0]!
      return new EncryptJWT(payload)
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: current.kid })
        .setExpirationTime(expiresAt)
        .encrypt(current.key)
    },

    async unseal(value) {
      if (value.length > chunkSize || !isCanonicalCompact(value, 5)) return undefined
      try {
        return (await jwtDecrypt(value, getStateKey, decryptOptions())).payload
      } catch {
        return undefined
      }
    },
  }
}
