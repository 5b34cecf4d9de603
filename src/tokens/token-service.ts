import { decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose'
import type { BearerResult } from '../core/bearer.ts'
import type { Clock } from '../core/clock.ts'
import { isCanonicalCompact, randomToken } from '../core/encoding.ts'
import { GatehouseError } from '../core/errors.ts'
import { claimsForHeaders, type Identity, type IdentityMapping, scopesFromClaims } from '../core/identity.ts'
import { lookUpEach } from '../core/look-up-each.ts'
import type { Logger } from '../core/ports.ts'
import { createTokenCache } from '../core/token-cache.ts'
import type { KeyRing } from '../keys/key-ring.ts'
import type { TokenRecord, TokenStore } from '../store/ports.ts'

/** Every Gatehouse API token starts with this, so secret scanners can spot a leaked one. */
export const TOKEN_PREFIX = 'gth_'

export interface TokenServiceOptions {
  store: TokenStore
  keyRing: KeyRing
  clock: Clock
  log: Logger
  /** `iss` of the tokens: Gatehouse's public URL. */
  issuer: string
  /** Default `aud`. */
  audience: string
  /** lifetimes.api_token and lifetimes.derived_token, in seconds. */
  lifetimes: {
    apiToken: { ttlSeconds: number; maxTtlSeconds: number }
    derivedToken: { ttlSeconds: number; maxTtlSeconds: number }
  }
  leewaySeconds?: number
  /** Verified tokens kept in memory, keyed by the exact token. Default 10,000. */
  cacheEntries?: number
  /** Called when a token is issued shorter than asked (never silent). */
  onCapped?: (cap: CapReport) => void
  /** Called after revocations are stored, e.g. to push them to the other instances (Redis). */
  onRevoked?: ((entries: Array<{ jti: string; expiresAt: number }>) => void) | undefined
  /** identity.headers_from_claims: the claims of a verified token sent upstream as headers. */
  claimHeaders?: IdentityMapping['claimHeaders']
}

export interface CapReport {
  jti: string
  requestedExpiresAt: number
  grantedExpiresAt: number
  by: 'class_max_ttl' | 'parent'
  parentJti?: string | undefined
}

export interface IssueRequest {
  subject: string
  scopes?: readonly string[]
  /** Seconds; default the class ttl. */
  ttlSeconds?: number
  /** Mint from this token (a derived token): it can never outlive its parent. */
  parentJti?: string
  description?: string
}

export interface Issued {
  /** The token, shown once: it is not stored. */
  token: string
  record: TokenRecord
  capped?: CapReport | undefined
}

export class TokenError extends GatehouseError {
  override readonly name = 'TokenError'
}

const KEY_RELOAD_COOLDOWN_MS = 10_000
/** Revocations pushed in one message that are looked up one by one; more, and they are all reloaded. */
export const MAX_REVOCATION_HINTS = 1000
/** Revocation hints waiting for their lookup, across messages. */
const MAX_PENDING_HINTS = 10_000
/** Lookups of one message's hints run at once. */
const HINT_LOOKUPS = 4
/** What a jti may look like (Gatehouse's are 22 base64url characters). */
const JTI = /^[A-Za-z0-9_-]{1,128}$/
const SUBJECT = /^[\x21-\x7e]{1,256}$/
const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/ // RFC 6749 §3.3 scope-token

/**
 * Gatehouse's own API tokens: JWTs signed by the key ring, prefixed `gth_`, verified with keys in
 * memory and a revocation list in memory, so verification never calls the identity provider or
 * the store. Seed 000: API access does not depend on the provider being up.
 */
export function createTokenService(options: TokenServiceOptions) {
  const { store, keyRing, clock, log, issuer, audience } = options
  const leeway = options.leewaySeconds ?? 30
  const cacheEntries = options.cacheEntries ?? 10_000
  const cache = createTokenCache<{ identity: Identity; expiresAt: number; jti: string }>(cacheEntries)
  let revoked = new Map<string, number>()
  const now = () => Math.floor(clock.now() / 1000)
  let lastKeyReloadMs = Number.NEGATIVE_INFINITY

  // Revocations pushed by other instances while a reload is reading the store: the reload may have read
  // before they were written, so they are kept across it (the next reload finds them in the store).
  let pushed = new Map<string, number>()

  async function refreshRevocations(): Promise<void> {
    const before = pushed
    pushed = new Map()
    try {
      // A token verifies until exp + leeway: keep its revocation that long too.
      const list = await store.listRevoked(now() - leeway)
      const next = new Map(list.map((r) => [r.jti, r.expiresAt]))
      for (const [jti, expiresAt] of pushed) next.set(jti, expiresAt)
      revoked = next
    } catch (err) {
      for (const [jti, expiresAt] of before) pushed.set(jti, expiresAt)
      throw err
    }
  }

  // A revocation refresh asked while one runs is run once more after it (it may have read too early);
  // any number of asks meanwhile make that one run.
  let refreshing: Promise<void> | undefined
  let refreshAgain: Promise<void> | undefined
  function refreshSoon(): Promise<void> {
    if (refreshAgain !== undefined) return refreshAgain
    if (refreshing !== undefined) {
      refreshAgain = refreshing.then(() => {
        refreshAgain = undefined
        return refreshSoon()
      })
      return refreshAgain
    }
    refreshing = refreshRevocations()
      .catch((err) =>
        log.warn(
          { event: 'revocation_refresh_failed', err: (err as Error).message },
          'revocations not reloaded; the timer tries again',
        ),
      )
      .finally(() => {
        refreshing = undefined
      })
    return refreshing
  }

  // jtis being confirmed against the store, so a flood of hints cannot queue without bound.
  const confirming = new Set<string>()

  /**
   * Revocations another instance says it made (pushed through Redis). A message on that channel is not
   * authenticated, so it is a hint, never taken as it is: each jti is looked up in the store and refused
   * from now on only when the store has it revoked, until the expiry the store has for it (the one in
   * the message is ignored). More than {@link MAX_REVOCATION_HINTS} at once, or more than
   * {@link MAX_PENDING_HINTS} waiting, is not looked up one by one: the revocations are reloaded instead.
   * While the store is unreachable nothing unconfirmed is taken: the timer's reload picks them up when it
   * answers. Never rejects; resolves once every jti named was looked up.
   */
  async function markRevoked(entries: ReadonlyArray<{ jti: string; expiresAt?: number }>): Promise<void> {
    if (!Array.isArray(entries)) return
    if (entries.length > MAX_REVOCATION_HINTS) {
      log.warn(
        { event: 'revocation_hint_oversized', count: entries.length },
        'too many revocations in one message to look up: reloading them from the store instead',
      )
      return refreshSoon()
    }
    const todo = new Set<string>()
    for (const e of entries) {
      const jti = (e as { jti?: unknown } | undefined)?.jti
      if (typeof jti !== 'string' || !JTI.test(jti)) continue
      if (!revoked.has(jti) && !confirming.has(jti)) todo.add(jti)
    }
    if (todo.size === 0) return
    if (confirming.size + todo.size > MAX_PENDING_HINTS) {
      log.warn(
        { event: 'revocation_hint_backlog', pending: confirming.size, count: todo.size },
        'too many revocations waiting to be looked up: reloading them from the store instead',
      )
      return refreshSoon()
    }
    for (const jti of todo) confirming.add(jti)
    const unreachable = await lookUpEach(
      [...todo],
      HINT_LOOKUPS,
      async (jti) => {
        const token = await store.getToken(jti)
        if (token?.revokedAt !== undefined) {
          revoked.set(jti, token.expiresAt)
          // Kept across a reload running meanwhile, which may have read before the revocation.
          pushed.set(jti, token.expiresAt)
        }
      },
      (jti) => confirming.delete(jti),
    )
    if (unreachable !== undefined) {
      log.warn(
        { event: 'revocation_hint_unconfirmed', count: todo.size, err: unreachable.message },
        'revocations pushed by another instance could not be confirmed in the store: left to the next reload',
      )
    }
  }

  async function issue(req: IssueRequest): Promise<Issued> {
    if (!SUBJECT.test(req.subject))
      throw new TokenError('ERR_TOKEN_SUBJECT', 'subject: 1-256 visible ASCII characters')
    const scopes = [...new Set(req.scopes ?? [])]
    for (const s of scopes)
      if (!SCOPE.test(s)) throw new TokenError('ERR_TOKEN_SCOPE', `scope "${s}" is not a valid scope token`)
    let parent: TokenRecord | undefined
    if (req.parentJti !== undefined) {
      parent = await store.getToken(req.parentJti)
      if (parent === undefined) throw new TokenError('ERR_TOKEN_PARENT', `no token ${req.parentJti}`)
      if (parent.revokedAt !== undefined)
        throw new TokenError('ERR_TOKEN_PARENT', `parent ${parent.jti} is revoked`)
      if (parent.expiresAt <= now())
        throw new TokenError('ERR_TOKEN_PARENT', `parent ${parent.jti} has expired`)
      for (const s of scopes) {
        if (!parent.scopes.includes(s))
          throw new TokenError('ERR_TOKEN_SCOPE', `scope "${s}" is not in the parent's scopes`)
      }
    }
    const life = parent === undefined ? options.lifetimes.apiToken : options.lifetimes.derivedToken
    const ttl = req.ttlSeconds ?? life.ttlSeconds
    if (!(Number.isInteger(ttl) && ttl > 0))
      throw new TokenError('ERR_TOKEN_TTL', 'ttl must be a positive number of seconds')
    const issuedAt = now()
    const requested = issuedAt + ttl
    let expiresAt = requested
    let capped: CapReport | undefined
    // Never starting with `-`: a jti is typed on command lines (`tokens revoke JTI`, `--parent JTI`).
    const jti = randomToken(16).replace(/^-/, 'A')
    if (expiresAt > issuedAt + life.maxTtlSeconds) {
      expiresAt = issuedAt + life.maxTtlSeconds
      capped = { jti, requestedExpiresAt: requested, grantedExpiresAt: expiresAt, by: 'class_max_ttl' }
    }
    if (parent !== undefined && expiresAt > parent.expiresAt) {
      expiresAt = parent.expiresAt
      capped = {
        jti,
        requestedExpiresAt: requested,
        grantedExpiresAt: expiresAt,
        by: 'parent',
        parentJti: parent.jti,
      }
    }
    const signing = keyRing.signingKey()
    const jwt = await new SignJWT({ scope: scopes.join(' '), ...(parent ? { par: parent.jti } : {}) })
      .setProtectedHeader({ alg: signing.alg, kid: signing.kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setSubject(req.subject)
      .setAudience(audience)
      .setJti(jti)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .sign(signing.key)
    const record: TokenRecord = {
      jti,
      subject: req.subject,
      scopes,
      audience,
      parentJti: parent?.jti,
      issuedAt,
      expiresAt,
      revokedAt: undefined,
      description: req.description,
    }
    await store.insertToken(record)
    log.info(
      { event: 'token_issued', jti, sub: req.subject, expiresAt, parent: parent?.jti },
      'API token issued',
    )
    if (capped !== undefined) {
      log.warn({ event: 'token_capped', ...capped }, 'API token issued with a shorter lifetime than asked')
      options.onCapped?.(capped)
    }
    return { token: TOKEN_PREFIX + jwt, record, capped }
  }

  async function verify(presented: string): Promise<BearerResult> {
    const hit = cache.get(presented)
    const t = now()
    if (hit !== undefined) {
      if (revoked.has(hit.jti)) return { ok: false, code: 'invalid_token', reason: 'token revoked' }
      if (hit.expiresAt + leeway > t)
        return { ok: true, identity: hit.identity, expiresAt: hit.expiresAt, token: presented }
      cache.delete(presented)
      return { ok: false, code: 'token_expired', reason: 'token expired' }
    }
    if (!presented.startsWith(TOKEN_PREFIX)) {
      return { ok: false, code: 'invalid_token', reason: 'not a Gatehouse token' }
    }
    if (presented.length > 4096) return { ok: false, code: 'invalid_token', reason: 'token too long' }
    const jwt = presented.slice(TOKEN_PREFIX.length)
    let kid: string | undefined
    try {
      kid = decodeProtectedHeader(jwt).kid
    } catch {
      return { ok: false, code: 'invalid_token', reason: 'malformed token' }
    }
    // Before any key lookup or crypto: a sibling spelling of a valid signature would verify, and miss the caches.
    if (!isCanonicalCompact(jwt, 3))
      return { ok: false, code: 'invalid_token', reason: 'not canonical base64url' }
    let key = kid === undefined ? undefined : keyRing.verificationKey(kid)
    if (key === undefined && kid !== undefined && clock.now() - lastKeyReloadMs >= KEY_RELOAD_COOLDOWN_MS) {
      // Another instance may have rotated twice since this one last ticked: look in the store (not the
      // provider), at most once per cooldown whatever the burst of unknown kids.
      lastKeyReloadMs = clock.now()
      try {
        await keyRing.reload()
      } catch (err) {
        // The store is down: verify with the keys in memory.
        log.warn({ event: 'key_reload_failed', err: (err as Error).message }, 'keys not reloaded')
      }
      key = keyRing.verificationKey(kid)
    }
    if (key === undefined)
      return { ok: false, code: 'invalid_token', reason: 'unknown or removed signing key' }
    let payload: Record<string, unknown>
    try {
      ;({ payload } = await jwtVerify(jwt, key.key, {
        issuer,
        audience,
        algorithms: [key.alg],
        clockTolerance: leeway,
        currentDate: new Date(clock.now()),
        requiredClaims: ['jti', 'sub', 'exp', 'iat'],
        // What issue() signs, and nothing else the same keys sign: identity assertions are typed otherwise.
        typ: 'JWT',
      }))
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'ERR_UNKNOWN'
      if (code === 'ERR_JWT_EXPIRED') return { ok: false, code: 'token_expired', reason: 'token expired' }
      return { ok: false, code: 'invalid_token', reason: `${code}: ${(err as Error).message}` }
    }
    // jose checks iat only with maxTokenAge; a token from the future was not issued by this clock.
    if (typeof payload['iat'] !== 'number' || payload['iat'] > now() + leeway) {
      return { ok: false, code: 'invalid_token', reason: 'iat is in the future' }
    }
    const jti = payload['jti'] as string
    if (revoked.has(jti)) return { ok: false, code: 'invalid_token', reason: 'token revoked' }
    const sub = payload['sub'] as string
    const identity: Identity = {
      sub,
      user: sub,
      groups: [],
      scopes: scopesFromClaims(payload),
      claims: claimsForHeaders(payload, options.claimHeaders, log),
    }
    const expiresAt = payload['exp'] as number
    cache.set(presented, { identity, expiresAt, jti })
    return { ok: true, identity, expiresAt, token: presented }
  }

  async function revoke(jti: string, cascade: boolean): Promise<{ revoked: string[]; descendants: number }> {
    const token = await store.getToken(jti)
    if (token === undefined) throw new TokenError('ERR_TOKEN_UNKNOWN', `no token ${jti}`)
    const descendants = await store.listDescendants(jti)
    // Live: still verifies, which lasts until exp + leeway.
    const live = descendants.filter((d) => d.revokedAt === undefined && d.expiresAt + leeway > now())
    if (live.length > 0 && !cascade) {
      throw new TokenError(
        'ERR_TOKEN_HAS_CHILDREN',
        `token ${jti} has ${live.length} live descendant(s); revoke with --cascade to revoke them too`,
      )
    }
    const ids = [jti, ...live.map((d) => d.jti)]
    await store.revokeTokens(ids, now())
    const entries = ids.map((id) => ({
      jti: id,
      expiresAt: (id === jti ? token : live.find((x) => x.jti === id)!).expiresAt,
    }))
    for (const e of entries) revoked.set(e.jti, e.expiresAt)
    options.onRevoked?.(entries)
    log.info({ event: 'token_revoked', jti, cascade: live.length }, 'API token revoked')
    return { revoked: ids, descendants: live.length }
  }

  /** Decode without trusting, then say what Gatehouse makes of it. Never prints the signature. */
  async function inspect(presented: string) {
    const jwt = presented.startsWith(TOKEN_PREFIX) ? presented.slice(TOKEN_PREFIX.length) : presented
    let header: Record<string, unknown>
    let claims: Record<string, unknown>
    try {
      header = decodeProtectedHeader(jwt) as Record<string, unknown>
      claims = decodeJwt(jwt) as Record<string, unknown>
    } catch {
      return { status: 'malformed' as const }
    }
    const result = await verify(presented)
    const record = typeof claims['jti'] === 'string' ? await store.getToken(claims['jti']) : undefined
    const status = result.ok
      ? 'valid'
      : result.code === 'token_expired'
        ? 'expired'
        : result.reason === 'token revoked'
          ? 'revoked'
          : 'invalid'
    return { status, reason: result.ok ? undefined : result.reason, header, claims, record }
  }

  return {
    issue,
    verify,
    revoke,
    inspect,
    refreshRevocations,
    markRevoked,
    /** How many revocations are held in memory (tests, metrics). */
    revokedCount: () => revoked.size,
    list: (includeExpired = false) => store.listTokens({ includeExpired, now: now() }),
    countDescendants: async (jti: string) => (await store.listDescendants(jti)).length,
    forget: (token: string) => cache.delete(token),
  }
}

export type TokenService = ReturnType<typeof createTokenService>
