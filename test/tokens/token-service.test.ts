import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import { base64url, decodeJwt, decodeProtectedHeader, exportSPKI, generateKeyPair, SignJWT } from 'jose'

import { createFrozenClock } from '../../src/core/clock.ts'
import { type Logger, silentLogger as silent } from '../../src/core/ports.ts'
import { createKeyRing, type KeyRing } from '../../src/keys/key-ring.ts'
import { StoreUnavailableError } from '../../src/store/errors.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import type { KeyStore, TokenStore } from '../../src/store/ports.ts'
import { createSQLiteStore } from '../../src/store/sqlite-store.ts'
import {
  type CapReport,
  createTokenService,
  TOKEN_PREFIX,
  type TokenService,
} from '../../src/tokens/token-service.ts'

const START = Date.UTC(2026, 0, 1)
const HOUR = 3600
const DAY = 86_400
const LEEWAY = 30
const PERIOD = 30 * DAY
const ISS = 'https://gatehouse.example'
const AUD = 'https://api.example'
const SECRET = 'at-rest secret for the token tests, 32+ chars'
const LIFETIMES = {
  apiToken: { ttlSeconds: DAY, maxTtlSeconds: 30 * DAY },
  derivedToken: { ttlSeconds: HOUR, maxTtlSeconds: DAY },
}
/** What services.ts derives: the longest API token lifetime plus the leeway. */
const RETENTION = LIFETIMES.apiToken.maxTtlSeconds + LEEWAY

type Clock = ReturnType<typeof createFrozenClock>
type Store = KeyStore & TokenStore
type Line = { level: string; obj: object; msg: string | undefined }

function recordingLogger(): { log: Logger; lines: Line[] } {
  const lines: Line[] = []
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push({ level, obj, msg })
  }
  return { log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines }
}

async function setup(
  options: { store?: Store; clock?: Clock; retentionSeconds?: number; algorithm?: 'EdDSA' | 'ES256' } = {},
) {
  const clock = options.clock ?? createFrozenClock(START)
  const store = options.store ?? createMemoryStore({ clock })
  const { log, lines } = recordingLogger()
  const ring = await createKeyRing({
    store,
    clock,
    log,
    algorithm: options.algorithm,
    encryptionSecrets: [SECRET],
    signingPeriodSeconds: PERIOD,
    publishAheadSeconds: DAY,
    retentionSeconds: options.retentionSeconds ?? RETENTION,
  })
  const caps: CapReport[] = []
  const service = (keyRing: KeyRing = ring) =>
    createTokenService({
      store,
      keyRing,
      clock,
      log,
      issuer: ISS,
      audience: AUD,
      lifetimes: LIFETIMES,
      leewaySeconds: LEEWAY,
      onCapped: (c) => caps.push(c),
    })
  const tokens = service()
  await tokens.refreshRevocations()
  const now = () => Math.floor(clock.now() / 1000)
  /** Another instance on the same store and keys: nothing cached, so every check runs in full. */
  const fresh = async () => {
    const other = service()
    await other.refreshRevocations()
    return other
  }
  return { clock, store, ring, tokens, caps, lines, now, fresh, service }
}

/** A token signed with the ring's current key, with any claims and header: what an attacker cannot do, a bug could. */
async function forge(
  ring: KeyRing,
  t: number,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const k = ring.signingKey()
  const jwt = await new SignJWT({
    iss: ISS,
    aud: AUD,
    sub: 'ci',
    jti: 'forged',
    iat: t,
    exp: t + 600,
    ...claims,
  })
    .setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'JWT', ...header })
    .sign(k.key)
  return TOKEN_PREFIX + jwt
}

async function refused(
  tokens: TokenService,
  token: string,
  code: 'invalid_token' | 'token_expired',
  reason: RegExp,
) {
  const r = await tokens.verify(token)
  assert.equal(r.ok, false, `refused: ${reason}`)
  if (r.ok) return
  assert.equal(r.code, code)
  assert.match(r.reason, reason)
}

async function accepted(tokens: TokenService, token: string, sub?: string) {
  const r = await tokens.verify(token)
  assert.ok(r.ok, r.ok ? '' : `expected valid, got ${r.code}: ${r.reason}`)
  if (sub !== undefined) assert.equal(r.identity.sub, sub)
  return r
}

function signatureOf(token: string): string {
  return token.split('.')[2]!
}

describe('tokens: issue', () => {
  it('default ttl of the class; a gth_ JWT signed by the current key with the claims it says; the record stored, never the token', async () => {
    const { tokens, store, ring, now, caps } = await setup()
    const issued = await tokens.issue({
      subject: 'ci-bot',
      scopes: ['deploy', 'read', 'deploy'],
      description: 'CI',
    })
    assert.ok(issued.token.startsWith(TOKEN_PREFIX))
    assert.equal(issued.capped, undefined)
    assert.deepEqual(caps, [])
    const t = now()
    assert.deepEqual(issued.record, {
      jti: issued.record.jti,
      subject: 'ci-bot',
      scopes: ['deploy', 'read'],
      audience: AUD,
      parentJti: undefined,
      issuedAt: t,
      expiresAt: t + LIFETIMES.apiToken.ttlSeconds,
      revokedAt: undefined,
      description: 'CI',
    })
    assert.deepEqual(await store.getToken(issued.record.jti), issued.record)
    const jwt = issued.token.slice(TOKEN_PREFIX.length)
    assert.deepEqual(decodeProtectedHeader(jwt), { alg: 'EdDSA', kid: ring.signingKey().kid, typ: 'JWT' })
    assert.deepEqual(decodeJwt(jwt), {
      iss: ISS,
      aud: AUD,
      sub: 'ci-bot',
      jti: issued.record.jti,
      iat: t,
      exp: t + DAY,
      scope: 'deploy read',
    })
    const r = await accepted(tokens, issued.token, 'ci-bot')
    assert.equal(r.expiresAt, t + DAY)
    assert.equal(r.identity.user, 'ci-bot')
    await accepted(tokens, issued.token) // from the cache
    // Another deployment (its own store and keys) does not know the key.
    await refused((await setup()).tokens, issued.token, 'invalid_token', /^unknown or removed signing key$/)
  })

  it('works with an ES256 key ring too', async () => {
    const { tokens, fresh } = await setup({ algorithm: 'ES256' })
    const { token } = await tokens.issue({ subject: 'ci' })
    assert.equal(decodeProtectedHeader(token.slice(4)).alg, 'ES256')
    await accepted(await fresh(), token, 'ci')
  })

  it('a ttl above the class max_ttl is capped, reported and announced (onCapped, a warning)', async () => {
    const { tokens, caps, lines, now } = await setup()
    const t = now()
    const issued = await tokens.issue({ subject: 'ci', ttlSeconds: 90 * DAY })
    const expected = {
      jti: issued.record.jti,
      requestedExpiresAt: t + 90 * DAY,
      grantedExpiresAt: t + 30 * DAY,
      by: 'class_max_ttl',
    }
    assert.deepEqual(issued.capped, expected)
    assert.deepEqual(caps, [expected])
    assert.equal(issued.record.expiresAt, t + 30 * DAY)
    assert.equal(decodeJwt(issued.token.slice(4)).exp, t + 30 * DAY)
    assert.ok(lines.some((l) => l.level === 'warn' && (l.obj as { event?: string }).event === 'token_capped'))
    // Exactly the max is not a cap.
    const exact = await tokens.issue({ subject: 'ci', ttlSeconds: 30 * DAY })
    assert.equal(exact.capped, undefined)
    assert.equal(caps.length, 1)
  })

  it('refuses a bad subject, scope or ttl, and stores nothing', async () => {
    const { tokens, store } = await setup()
    const cases: Array<[Parameters<TokenService['issue']>[0], string]> = [
      [{ subject: '' }, 'ERR_TOKEN_SUBJECT'],
      [{ subject: 'has space' }, 'ERR_TOKEN_SUBJECT'],
      [{ subject: 'x'.repeat(257) }, 'ERR_TOKEN_SUBJECT'],
      [{ subject: 'ci', scopes: ['ok', 'qu"ote'] }, 'ERR_TOKEN_SCOPE'],
      [{ subject: 'ci', scopes: ['back\\slash'] }, 'ERR_TOKEN_SCOPE'],
      [{ subject: 'ci', scopes: [''] }, 'ERR_TOKEN_SCOPE'],
      [{ subject: 'ci', ttlSeconds: 0 }, 'ERR_TOKEN_TTL'],
      [{ subject: 'ci', ttlSeconds: -60 }, 'ERR_TOKEN_TTL'],
      [{ subject: 'ci', ttlSeconds: 1.5 }, 'ERR_TOKEN_TTL'],
      [{ subject: 'ci', ttlSeconds: Number.NaN }, 'ERR_TOKEN_TTL'],
      [{ subject: 'ci', parentJti: 'no-such-token' }, 'ERR_TOKEN_PARENT'],
    ]
    for (const [req, code] of cases) {
      await assert.rejects(tokens.issue(req), { name: 'TokenError', code }, JSON.stringify(req))
    }
    assert.deepEqual(await store.listTokens({ includeExpired: true }), [])
  })
})

describe('tokens: derived', () => {
  it('default ttl of the derived class, the par claim, scopes narrowed', async () => {
    const { tokens, now, fresh } = await setup()
    const parent = await tokens.issue({ subject: 'ci', scopes: ['deploy', 'read'], ttlSeconds: 7 * DAY })
    const child = await tokens.issue({ subject: 'ci-job', scopes: ['read'], parentJti: parent.record.jti })
    assert.equal(child.capped, undefined)
    assert.equal(child.record.expiresAt, now() + LIFETIMES.derivedToken.ttlSeconds)
    assert.equal(child.record.parentJti, parent.record.jti)
    assert.deepEqual(child.record.scopes, ['read'])
    const claims = decodeJwt(child.token.slice(4))
    assert.equal(claims['par'], parent.record.jti)
    assert.equal(claims['scope'], 'read')
    await accepted(await fresh(), child.token, 'ci-job')
  })

  it("capped at the parent's expiry (by: parent), and by the derived class max when the parent lives longer", async () => {
    const { tokens, caps, now } = await setup()
    const t = now()
    const parent = await tokens.issue({ subject: 'ci', ttlSeconds: 600 })
    const child = await tokens.issue({ subject: 'ci', parentJti: parent.record.jti }) // default 1h > 600 s left
    const byParent = {
      jti: child.record.jti,
      requestedExpiresAt: t + HOUR,
      grantedExpiresAt: t + 600,
      by: 'parent',
      parentJti: parent.record.jti,
    }
    assert.deepEqual(child.capped, byParent)
    assert.equal(child.record.expiresAt, parent.record.expiresAt)
    // Above the derived max too: the tighter bound (the parent) is the one reported.
    const both = await tokens.issue({ subject: 'ci', parentJti: parent.record.jti, ttlSeconds: 10 * DAY })
    assert.equal(both.capped?.by, 'parent')
    assert.equal(both.record.expiresAt, t + 600)

    const longParent = await tokens.issue({ subject: 'ci', ttlSeconds: 30 * DAY })
    const capped = await tokens.issue({
      subject: 'ci',
      parentJti: longParent.record.jti,
      ttlSeconds: 10 * DAY,
    })
    assert.deepEqual(capped.capped, {
      jti: capped.record.jti,
      requestedExpiresAt: t + 10 * DAY,
      grantedExpiresAt: t + DAY,
      by: 'class_max_ttl',
    })
    assert.deepEqual(caps, [byParent, both.capped, capped.capped])

    // A grandchild is capped by its own parent, the child.
    const grandchild = await tokens.issue({ subject: 'ci', parentJti: child.record.jti, ttlSeconds: HOUR })
    assert.equal(grandchild.record.expiresAt, child.record.expiresAt)
  })

  it('cannot widen scopes; cannot be minted from a revoked, expired or unknown parent; nothing stored then', async () => {
    const { tokens, store, clock } = await setup()
    const parent = await tokens.issue({ subject: 'ci', scopes: ['read', 'deploy'] })
    const count = async () => (await store.listTokens({ includeExpired: true })).length
    const before = await count()

    await assert.rejects(
      tokens.issue({ subject: 'ci', scopes: ['read', 'admin'], parentJti: parent.record.jti }),
      {
        code: 'ERR_TOKEN_SCOPE',
        message: /admin.*parent/,
      },
    )
    const scopeless = await tokens.issue({ subject: 'ci' })
    await assert.rejects(tokens.issue({ subject: 'ci', scopes: ['read'], parentJti: scopeless.record.jti }), {
      code: 'ERR_TOKEN_SCOPE',
    })
    assert.equal(await count(), before + 1)

    const revoked = await tokens.issue({ subject: 'ci', scopes: ['read'] })
    await tokens.revoke(revoked.record.jti, false)
    await assert.rejects(tokens.issue({ subject: 'ci', parentJti: revoked.record.jti }), {
      code: 'ERR_TOKEN_PARENT',
      message: /revoked/,
    })

    const short = await tokens.issue({ subject: 'ci', ttlSeconds: 60 })
    clock.advance(60_000)
    await assert.rejects(tokens.issue({ subject: 'ci', parentJti: short.record.jti }), {
      code: 'ERR_TOKEN_PARENT',
      message: /expired/,
    })
    await assert.rejects(tokens.issue({ subject: 'ci', parentJti: 'nope' }), { code: 'ERR_TOKEN_PARENT' })
    assert.equal(await count(), before + 3)
  })
})

describe('tokens: revoke', () => {
  it('verify → revoke → verify: refused even though it was cached as valid', async () => {
    const { tokens } = await setup()
    const { token, record } = await tokens.issue({ subject: 'ci' })
    await accepted(tokens, token)
    await accepted(tokens, token)
    const r = await tokens.revoke(record.jti, false)
    assert.deepEqual(r, { revoked: [record.jti], descendants: 0 })
    await refused(tokens, token, 'invalid_token', /^token revoked$/)
    await tokens.refreshRevocations()
    await refused(tokens, token, 'invalid_token', /^token revoked$/)
  })

  it('unknown jti: ERR_TOKEN_UNKNOWN', async () => {
    const { tokens } = await setup()
    await assert.rejects(tokens.revoke('nope', true), { code: 'ERR_TOKEN_UNKNOWN' })
  })

  async function family() {
    const s = await setup()
    const { tokens } = s
    const root = await tokens.issue({ subject: 'root', scopes: ['a', 'b'], ttlSeconds: 10 * DAY })
    const child = await tokens.issue({
      subject: 'child',
      scopes: ['a'],
      parentJti: root.record.jti,
      ttlSeconds: DAY,
    })
    const sibling = await tokens.issue({ subject: 'sibling', parentJti: root.record.jti, ttlSeconds: DAY })
    const grandchild = await tokens.issue({
      subject: 'grandchild',
      parentJti: child.record.jti,
      ttlSeconds: DAY,
    })
    const great = await tokens.issue({ subject: 'great', parentJti: grandchild.record.jti, ttlSeconds: DAY })
    const unrelated = await tokens.issue({ subject: 'unrelated', ttlSeconds: DAY })
    const all = { root, child, sibling, grandchild, great, unrelated }
    for (const t of Object.values(all)) await accepted(tokens, t.token) // all cached as valid
    return { ...s, all }
  }

  it('without cascade, live descendants refuse the revocation (ERR_TOKEN_HAS_CHILDREN) and nothing changes', async () => {
    const { tokens, store, all, fresh, now } = await family()
    await assert.rejects(tokens.revoke(all.child.record.jti, false), {
      code: 'ERR_TOKEN_HAS_CHILDREN',
      message: /2 live descendant/,
    })
    assert.deepEqual(await store.listRevoked(now()), [])
    for (const t of Object.values(all)) {
      assert.equal((await store.getToken(t.record.jti))?.revokedAt, undefined)
      await accepted(tokens, t.token)
    }
    const other = await fresh()
    for (const t of Object.values(all)) await accepted(other, t.token)
  })

  it('with cascade, the whole subtree (three generations) is revoked and nothing else', async () => {
    const { tokens, store, all, fresh, now } = await family()
    const { child, grandchild, great } = all
    const r = await tokens.revoke(child.record.jti, true)
    assert.deepEqual(
      [...r.revoked].sort(),
      [child.record.jti, grandchild.record.jti, great.record.jti].sort(),
    )
    assert.equal(r.descendants, 2)
    const revokedSet = new Set(r.revoked)
    const other = await fresh()
    for (const [name, t] of Object.entries(all)) {
      const stored = await store.getToken(t.record.jti)
      if (revokedSet.has(t.record.jti)) {
        assert.equal(stored?.revokedAt, now(), name)
        await refused(tokens, t.token, 'invalid_token', /^token revoked$/)
        await refused(other, t.token, 'invalid_token', /^token revoked$/)
      } else {
        assert.equal(stored?.revokedAt, undefined, name)
        await accepted(tokens, t.token)
        await accepted(other, t.token)
      }
    }
    // The root still has a live child (the sibling): still refused without cascade.
    await assert.rejects(tokens.revoke(all.root.record.jti, false), { code: 'ERR_TOKEN_HAS_CHILDREN' })
  })

  it('descendants that are revoked or expired do not block a revocation without cascade', async () => {
    const { tokens, clock } = await setup()
    const root = await tokens.issue({ subject: 'ci', ttlSeconds: 10 * DAY })
    const a = await tokens.issue({ subject: 'ci', parentJti: root.record.jti, ttlSeconds: 60 })
    const b = await tokens.issue({ subject: 'ci', parentJti: root.record.jti, ttlSeconds: HOUR })
    await tokens.revoke(b.record.jti, false)
    clock.advance((60 + LEEWAY) * 1000) // a no longer verifies
    await refused(tokens, a.token, 'token_expired', /token expired/)
    assert.deepEqual(await tokens.revoke(root.record.jti, false), {
      revoked: [root.record.jti],
      descendants: 0,
    })
  })

  it('a revoked token stays refused through the leeway after its expiry, after refreshRevocations too', async () => {
    const { tokens, clock, fresh } = await setup()
    const { token, record } = await tokens.issue({ subject: 'ci', ttlSeconds: 100 })
    const other = await fresh()
    await accepted(other, token)
    clock.advance(90_000)
    await tokens.revoke(record.jti, false)
    clock.advance(20_000) // 10 s past exp: still within the leeway, where an unrevoked token verifies
    await tokens.refreshRevocations()
    await other.refreshRevocations()
    await refused(tokens, token, 'invalid_token', /^token revoked$/)
    await refused(other, token, 'invalid_token', /^token revoked$/)
    await refused(await fresh(), token, 'invalid_token', /^token revoked$/)
  })

  it('a cascade revokes a descendant that is past its exp but still within the leeway', async () => {
    const { tokens, clock, fresh } = await setup()
    const root = await tokens.issue({ subject: 'ci', ttlSeconds: DAY })
    const child = await tokens.issue({ subject: 'ci', parentJti: root.record.jti, ttlSeconds: 100 })
    clock.advance(110_000)
    await accepted(tokens, child.token) // 10 s past exp, within the leeway
    const r = await tokens.revoke(root.record.jti, true)
    assert.deepEqual([...r.revoked].sort(), [root.record.jti, child.record.jti].sort())
    await refused(tokens, child.token, 'invalid_token', /^token revoked$/)
    await refused(await fresh(), child.token, 'invalid_token', /^token revoked$/)
  })
})

describe('tokens: bad input', () => {
  it('expired: token_expired once exp plus the leeway has passed, cached or not', async () => {
    const { tokens, clock, fresh, now } = await setup()
    const { token, record } = await tokens.issue({ subject: 'ci', ttlSeconds: 600 })
    await accepted(tokens, token) // cached
    clock.set((record.expiresAt + LEEWAY - 1) * 1000)
    await accepted(tokens, token)
    await accepted(await fresh(), token)
    clock.set((record.expiresAt + LEEWAY) * 1000)
    assert.equal(now(), record.expiresAt + LEEWAY)
    await refused(tokens, token, 'token_expired', /^token expired$/)
    await refused(tokens, token, 'token_expired', /^token expired$/) // and dropped from the cache
    await refused(await fresh(), token, 'token_expired', /^token expired$/)
  })

  it('not yet valid: nbf in the future beyond the leeway is refused; within the leeway accepted', async () => {
    const { ring, now, tokens } = await setup()
    const t = now()
    await refused(
      tokens,
      await forge(ring, t, { nbf: t + LEEWAY + 1 }),
      'invalid_token',
      /ERR_JWT_CLAIM_VALIDATION_FAILED.*"nbf"/,
    )
    await accepted(tokens, await forge(ring, t, { nbf: t + LEEWAY }))
  })

  it('not yet valid: iat in the future beyond the leeway is refused', async () => {
    const { ring, now, tokens } = await setup()
    const t = now()
    await refused(tokens, await forge(ring, t, { iat: t + HOUR, exp: t + 2 * HOUR }), 'invalid_token', /iat/)
  })

  it('wrong audience, wrong issuer: signed with the current key, refused with the failing claim', async () => {
    const { ring, now, tokens } = await setup()
    const t = now()
    await accepted(tokens, await forge(ring, t), 'ci') // the forgery itself is sound
    await refused(
      tokens,
      await forge(ring, t, { aud: 'https://other.example' }),
      'invalid_token',
      /ERR_JWT_CLAIM_VALIDATION_FAILED.*"aud"/,
    )
    await refused(
      tokens,
      await forge(ring, t, { iss: 'https://evil.example' }),
      'invalid_token',
      /ERR_JWT_CLAIM_VALIDATION_FAILED.*"iss"/,
    )
    await refused(tokens, await forge(ring, t, { iss: undefined }), 'invalid_token', /"iss"/)
    await refused(tokens, await forge(ring, t, { jti: undefined }), 'invalid_token', /"jti"/)
    await refused(tokens, await forge(ring, t, { sub: undefined }), 'invalid_token', /"sub"/)
    await refused(tokens, await forge(ring, t, { exp: undefined }), 'invalid_token', /"exp"/)
  })

  it('unknown kid, no kid, a kid of the ring on a signature by another key, a tampered payload', async () => {
    const { ring, now, tokens } = await setup()
    const t = now()
    await refused(
      tokens,
      await forge(ring, t, {}, { kid: 'no-such-key' }),
      'invalid_token',
      /^unknown or removed signing key$/,
    )
    const k = ring.signingKey()
    const noKid = await new SignJWT({ iss: ISS, aud: AUD, sub: 'ci', jti: 'x', iat: t, exp: t + 600 })
      .setProtectedHeader({ alg: k.alg })
      .sign(k.key)
    await refused(tokens, TOKEN_PREFIX + noKid, 'invalid_token', /^unknown or removed signing key$/)

    const stranger = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const wrongKey = await new SignJWT({ iss: ISS, aud: AUD, sub: 'ci', jti: 'x', iat: t, exp: t + 600 })
      .setProtectedHeader({ alg: 'EdDSA', kid: k.kid })
      .sign(stranger.privateKey)
    await refused(tokens, TOKEN_PREFIX + wrongKey, 'invalid_token', /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/)

    const { token } = await tokens.issue({ subject: 'ci' })
    const [h, , s] = token.slice(4).split('.')
    const payload = base64url.encode(JSON.stringify({ ...decodeJwt(token.slice(4)), sub: 'admin' }))
    await refused(
      tokens,
      `${TOKEN_PREFIX}${h}.${payload}.${s}`,
      'invalid_token',
      /SIGNATURE_VERIFICATION_FAILED/,
    )
  })

  it('alg confusion: HS256 keyed with the public key bytes, and alg none, are refused', async () => {
    const { ring, now, tokens } = await setup()
    const t = now()
    const { kid } = ring.signingKey()
    const jwk = ring.jwks().keys.find((k) => k['kid'] === kid)!
    const claims = { iss: ISS, aud: AUD, sub: 'admin', jti: 'x', iat: t, exp: t + 600 }
    const publicKey = ring.verificationKey(kid)!.key
    const secrets = [
      base64url.decode(jwk['x'] as string), // the raw public key
      new TextEncoder().encode(JSON.stringify(jwk)),
      new TextEncoder().encode(await exportSPKI(publicKey)),
    ]
    for (const secret of secrets) {
      const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid }).sign(secret)
      await refused(tokens, TOKEN_PREFIX + hs, 'invalid_token', /ERR_JOSE_ALG_NOT_ALLOWED/)
    }
    const enc = (o: object) => base64url.encode(JSON.stringify(o))
    for (const sig of ['', 'AAAA']) {
      const none = `${enc({ alg: 'none', kid })}.${enc(claims)}.${sig}`
      await refused(tokens, TOKEN_PREFIX + none, 'invalid_token', /ERR_JOSE_ALG_NOT_ALLOWED|ERR_JWS_INVALID/)
    }
    // The right alg name with the wrong family (ES256 header on an Ed25519 key) is refused as well.
    const es = await generateKeyPair('ES256')
    const wrongFamily = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid })
      .sign(es.privateKey)
    await refused(tokens, TOKEN_PREFIX + wrongFamily, 'invalid_token', /ERR_JOSE_ALG_NOT_ALLOWED/)
  })

  it('no gth_ prefix, garbage after the prefix, an oversized token: each refused with its reason', async () => {
    const { tokens } = await setup()
    const { token } = await tokens.issue({ subject: 'ci' })
    await refused(tokens, token.slice(TOKEN_PREFIX.length), 'invalid_token', /^not a Gatehouse token$/)
    await refused(tokens, `GTH_${token.slice(4)}`, 'invalid_token', /^not a Gatehouse token$/)
    await refused(tokens, '', 'invalid_token', /^not a Gatehouse token$/)
    for (const garbage of ['gth_', 'gth_garbage', 'gth_a.b.c', 'gth_..', 'gth_%%%.%%%.%%%', `gth_${token}`]) {
      await refused(tokens, garbage, 'invalid_token', /^malformed token$/)
    }
    await refused(tokens, token + 'a'.repeat(4096), 'invalid_token', /^token too long$/)
    await refused(tokens, `${TOKEN_PREFIX}${'a'.repeat(5000)}`, 'invalid_token', /^token too long$/)
    await accepted(tokens, token) // none of this disturbed the real one
  })

  it('property: any string, prefixed or not, is refused with invalid_token and never throws', async () => {
    const { tokens, ring } = await setup()
    const segment = fc.stringMatching(/^[A-Za-z0-9_-]{0,40}$/)
    const arbitraryToken = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ maxLength: 200 }).map((s) => TOKEN_PREFIX + s),
      fc.tuple(segment, segment, segment).map(([a, b, c]) => `${TOKEN_PREFIX}${a}.${b}.${c}`),
      // A real header with the ring's kid, then junk: goes as far as the signature check.
      fc
        .tuple(segment, segment)
        .map(
          ([b, c]) =>
            `${TOKEN_PREFIX}${base64url.encode(JSON.stringify({ alg: 'EdDSA', kid: ring.signingKey().kid }))}.${b}.${c}`,
        ),
    )
    await fc.assert(
      fc.asyncProperty(arbitraryToken, async (s) => {
        const r = await tokens.verify(s)
        assert.equal(r.ok, false)
        if (!r.ok) assert.equal(r.code, 'invalid_token')
        const i = await tokens.inspect(s)
        assert.notEqual(i.status, 'valid')
      }),
      { numRuns: 300 },
    )
  })
})

describe('tokens: inspect', () => {
  it('valid, expired, revoked, invalid, malformed; never the signature', async () => {
    const { tokens, ring, clock, now } = await setup()
    const valid = await tokens.issue({ subject: 'ci', scopes: ['read'], ttlSeconds: HOUR })
    const revoked = await tokens.issue({ subject: 'ci', ttlSeconds: HOUR })
    await tokens.revoke(revoked.record.jti, false)
    const invalid = await forge(ring, now(), { aud: 'https://other.example' })
    const expiring = await tokens.issue({ subject: 'ci', ttlSeconds: 60 })

    const v = await tokens.inspect(valid.token)
    assert.equal(v.status, 'valid')
    assert.equal(v.reason, undefined)
    assert.equal(v.header['kid'], ring.signingKey().kid)
    assert.equal(v.claims['sub'], 'ci')
    assert.deepEqual(v.record, valid.record)

    const r = await tokens.inspect(revoked.token)
    assert.equal(r.status, 'revoked')
    assert.ok(r.record?.revokedAt !== undefined)

    const i = await tokens.inspect(invalid)
    assert.equal(i.status, 'invalid')
    assert.match(i.reason ?? '', /"aud"/)
    assert.equal(i.record, undefined, 'a forged jti has no record')

    clock.set((expiring.record.expiresAt + LEEWAY) * 1000)
    const e = await tokens.inspect(expiring.token)
    assert.equal(e.status, 'expired')

    assert.deepEqual(await tokens.inspect('gth_garbage'), { status: 'malformed' })
    const bare = await tokens.inspect(valid.token.slice(4))
    assert.equal(bare.status, 'invalid')

    for (const [token, out] of [
      [valid.token, v],
      [revoked.token, r],
      [invalid, i],
      [expiring.token, e],
    ] as const) {
      assert.equal(JSON.stringify(out).includes(signatureOf(token)), false, 'no signature in the output')
    }
  })
})

describe('tokens: logs', () => {
  it('issue, cap, derive, revoke, refusals and inspect log what happened, never a token', async () => {
    const { tokens, lines, clock, ring, now } = await setup()
    const a = await tokens.issue({ subject: 'ci', scopes: ['read'], ttlSeconds: 90 * DAY })
    const b = await tokens.issue({
      subject: 'ci',
      scopes: ['read'],
      parentJti: a.record.jti,
      ttlSeconds: 2 * DAY,
    })
    await tokens.verify(a.token)
    await tokens.inspect(b.token)
    await tokens.verify(await forge(ring, now(), { aud: 'x' }))
    await tokens.revoke(a.record.jti, true)
    await tokens.verify(a.token)
    clock.advance(31 * DAY * 1000)
    await tokens.verify(b.token)
    await ring.tick()

    const events = lines.map((l) => (l.obj as { event?: string }).event)
    for (const e of ['token_issued', 'token_capped', 'token_revoked']) assert.ok(events.includes(e), e)
    const text = JSON.stringify(lines)
    for (const token of [a.token, b.token]) {
      const jwt = token.slice(4)
      for (const part of [token, jwt, ...jwt.split('.')]) {
        assert.equal(text.includes(part), false, 'no token or part of one in the log')
      }
    }
  })
})

describe('tokens across key rotation', () => {
  it('a token signed just before a rotation verifies until its own expiry; its key is removed only after', async () => {
    const { tokens, ring, clock, fresh, now } = await setup()
    const first = ring.signingKey().kid
    const retiresAt = ring.list().find((k) => k.kid === first)!.retiresAt
    clock.set((retiresAt - 1) * 1000)
    const { token, record } = await tokens.issue({ subject: 'ci', ttlSeconds: 30 * DAY })
    assert.equal(decodeProtectedHeader(token.slice(4)).kid, first)
    clock.set(retiresAt * 1000)
    await ring.tick()
    assert.notEqual(ring.signingKey().kid, first, 'rotated')

    // Walk past the token's life in 6-hour ticks; check it on a fresh instance (no cache) every time.
    while (now() < record.expiresAt + LEEWAY) {
      await ring.tick()
      await accepted(await fresh(), token, 'ci')
      assert.ok(ring.verificationKey(first), 'its key is published while it lives')
      clock.advance(6 * HOUR * 1000)
    }
    clock.set((record.expiresAt + LEEWAY - 1) * 1000)
    await ring.tick()
    await accepted(await fresh(), token)
    clock.set((record.expiresAt + LEEWAY) * 1000)
    await ring.tick()
    await refused(await fresh(), token, 'token_expired', /token expired/)
    const removeAt = ring.list().find((k) => k.kid === first)?.removeAt
    assert.ok(removeAt === undefined || removeAt >= record.expiresAt + LEEWAY)
  })

  it('retention: across rotations, late ticks and a downtime, no key is removed while a token it signed can live', async () => {
    const { tokens, ring, clock, now, fresh } = await setup()
    const live: Array<{ token: string; kid: string; until: number }> = []
    const end = now() + 5 * PERIOD
    let step = 0
    while (now() < end) {
      step++
      // Issue before the tick (ticks run every minute at best, and another instance may have rotated),
      // at times that land right around the scheduled rotations.
      if (step % 3 === 0) {
        const issued = await tokens.issue({ subject: `s${step}`, ttlSeconds: 30 * DAY })
        const kid = decodeProtectedHeader(issued.token.slice(4)).kid as string
        live.push({ token: issued.token, kid, until: issued.record.expiresAt + LEEWAY })
        const key = ring.list().find((k) => k.kid === kid)!
        assert.ok(key.removeAt >= issued.record.expiresAt + LEEWAY, 'the signing key outlives the token')
      }
      await ring.tick()
      const published = new Set(ring.jwks().keys.map((k) => k['kid']))
      for (const l of live) {
        if (l.until > now()) assert.ok(published.has(l.kid), `key ${l.kid} published while its token lives`)
      }
      // Steps of 7 h 59 min 50 s: the tick is late at most boundaries, by varying amounts.
      clock.advance((8 * HOUR - 10) * 1000)
      if (step === 200) clock.advance(40 * DAY * 1000) // every instance down for longer than a period
    }
    const other = await fresh()
    for (const l of live.filter((x) => x.until > now())) await accepted(other, l.token)
  })

  it('a token whose key was removed is refused: unknown or removed signing key', async () => {
    // Misconfigured on purpose: a retention shorter than the tokens' lifetime.
    const { tokens, ring, clock } = await setup({ retentionSeconds: 60 })
    clock.advance(10 * DAY * 1000)
    const issued = await tokens.issue({ subject: 'ci', ttlSeconds: 30 * DAY })
    const kid = ring.signingKey().kid
    await ring.rotate()
    const removeAt = ring.list().find((k) => k.kid === kid)!.removeAt
    clock.set(removeAt * 1000)
    assert.ok((await ring.tick()).includes(`${kid} removed`))
    assert.ok(issued.record.expiresAt > removeAt, 'the token itself has not expired')
    const other = createTokenService({
      store: createMemoryStore(),
      keyRing: ring,
      clock,
      log: recordingLogger().log,
      issuer: ISS,
      audience: AUD,
      lifetimes: LIFETIMES,
    })
    await refused(other, issued.token, 'invalid_token', /^unknown or removed signing key$/)
  })
})

describe('tokens: two instances on one SQLite database', () => {
  let dir: string
  let n = 0
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-tokens-'))
  })
  after(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  async function twoInstances() {
    const file = join(dir, `tokens-${++n}.db`)
    const dbs = [new DatabaseSync(file), new DatabaseSync(file)]
    for (const db of dbs) db.exec('PRAGMA busy_timeout = 5000')
    const clock = createFrozenClock(START)
    const cli = await setup({ clock, store: createSQLiteStore(dbs[0]!) })
    const proxy = await setup({ clock, store: createSQLiteStore(dbs[1]!) })
    return {
      clock,
      cli,
      proxy,
      close: () => {
        for (const db of dbs) db.close()
      },
    }
  }

  it('the proxy sees a revocation made by the CLI after refreshRevocations(), cached or not', async () => {
    const { cli, proxy, close } = await twoInstances()
    try {
      const { token, record } = await cli.tokens.issue({ subject: 'ci' })
      const child = await cli.tokens.issue({ subject: 'ci', parentJti: record.jti })
      await accepted(proxy.tokens, token, 'ci')
      await accepted(proxy.tokens, child.token, 'ci')
      await cli.tokens.revoke(record.jti, true)
      await refused(cli.tokens, token, 'invalid_token', /^token revoked$/)
      // Until it refreshes, the proxy still has the token as valid: this is the window refreshRevocations() closes.
      await accepted(proxy.tokens, token)
      await proxy.tokens.refreshRevocations()
      await refused(proxy.tokens, token, 'invalid_token', /^token revoked$/)
      await refused(proxy.tokens, child.token, 'invalid_token', /^token revoked$/)
      await refused(await proxy.fresh(), token, 'invalid_token', /^token revoked$/)
    } finally {
      close()
    }
  })

  it('tokens issued by either instance verify on the other across a rotation made by one of them', async () => {
    const { clock, cli, proxy, close } = await twoInstances()
    try {
      const before = await cli.tokens.issue({ subject: 'before' })
      await accepted(proxy.tokens, before.token)
      clock.advance(DAY * 1000)
      await cli.ring.rotate()
      const after = await cli.tokens.issue({ subject: 'after' })
      await accepted(await proxy.fresh(), after.token, 'after') // the key was published as next
      await accepted(await proxy.fresh(), before.token, 'before')
      await proxy.ring.tick()
      const fromProxy = await proxy.tokens.issue({ subject: 'proxy' })
      assert.equal(
        decodeProtectedHeader(fromProxy.token.slice(4)).kid,
        decodeProtectedHeader(after.token.slice(4)).kid,
      )
      await accepted(await cli.fresh(), fromProxy.token, 'proxy')
    } finally {
      close()
    }
  })
})

describe('an instance that has not seen the newest key yet', () => {
  it('looks for an unknown kid in the store (not the provider), at most once per cooldown', async () => {
    const clock = createFrozenClock(Date.UTC(2026, 10, 1))
    const store = createMemoryStore()
    const ringOptions = {
      store,
      clock,
      log: silent,
      encryptionSecrets: ['x'.repeat(40)],
      signingPeriodSeconds: 30 * DAY,
      publishAheadSeconds: DAY,
      retentionSeconds: 90 * DAY,
    }
    const ringA = await createKeyRing(ringOptions)
    const ringB = await createKeyRing(ringOptions)
    const lifetimes = {
      apiToken: { ttlSeconds: DAY, maxTtlSeconds: 30 * DAY },
      derivedToken: { ttlSeconds: 3600, maxTtlSeconds: DAY },
    }
    const a = createTokenService({
      store,
      keyRing: ringA,
      clock,
      log: silent,
      issuer: ISS,
      audience: AUD,
      lifetimes,
    })
    const b = createTokenService({
      store,
      keyRing: ringB,
      clock,
      log: silent,
      issuer: ISS,
      audience: AUD,
      lifetimes,
    })
    // Two on-demand rotations on A: B's ring has never seen the key that now signs.
    await ringA.rotate()
    await ringA.rotate()
    const { token } = await a.issue({ subject: 'ci' })
    const kid = decodeProtectedHeader(token.slice(4)).kid as string
    assert.equal(ringB.verificationKey(kid), undefined)
    assert.equal((await b.verify(token)).ok, true, 'found after one reload from the store')
    // A burst of unknown kids within the cooldown costs no further reloads.
    let reloads = 0
    const reload = ringB.reload
    ringB.reload = async () => {
      reloads++
      return reload()
    }
    for (let i = 0; i < 20; i++) {
      const forged = await forge(ringA, Math.floor(clock.now() / 1000), {}, { kid: `unknown-${i}` })
      assert.equal((await b.verify(forged)).ok, false)
    }
    assert.equal(reloads, 0)
    clock.advance(10_000)
    await b.verify(await forge(ringA, Math.floor(clock.now() / 1000), {}, { kid: 'unknown-late' }))
    assert.equal(reloads, 1)
  })
})

describe('tokens: revocations pushed by another instance are hints, confirmed in the store', () => {
  const FAR = 2 ** 53 - 1

  /** The store, counting lookups, with a switch to make it unreachable for lookups and reloads. */
  function observed(store: Store) {
    const seen = { getToken: 0, listRevoked: 0 }
    let down = false
    const wrapped: Store = {
      ...store,
      async getToken(jti) {
        seen.getToken++
        if (down) throw new StoreUnavailableError('PostgreSQL', 'test outage')
        return store.getToken(jti)
      },
      async listRevoked(now) {
        seen.listRevoked++
        if (down) throw new StoreUnavailableError('PostgreSQL', 'test outage')
        return store.listRevoked(now)
      },
    }
    return { wrapped, seen, setDown: (d: boolean) => (down = d) }
  }

  it('a forged hint naming a live token does not make it refused', async () => {
    const { tokens, fresh } = await setup()
    const { token, record } = await tokens.issue({ subject: 'live' })
    const b = await fresh()
    await accepted(b, token)
    const before = b.revokedCount()
    await b.markRevoked([{ jti: record.jti, expiresAt: FAR }])
    await accepted(b, token)
    assert.equal(b.revokedCount(), before)
  })

  it('a real revocation is refused at once, until the expiry the store has (not the one pushed)', async () => {
    const { tokens, fresh, clock } = await setup()
    const { token, record } = await tokens.issue({ subject: 'revoked', ttlSeconds: HOUR })
    const b = await fresh()
    await accepted(b, token)
    await tokens.revoke(record.jti, false)
    await b.markRevoked([{ jti: record.jti, expiresAt: FAR }])
    await refused(b, token, 'invalid_token', /^token revoked$/)
    // Past its expiry (and the leeway) a reload forgets it: it was kept with the stored exp, not 2^53-1.
    clock.advance((HOUR + LEEWAY + 1) * 1000)
    await b.refreshRevocations()
    await b.refreshRevocations()
    assert.equal(b.revokedCount(), 0)
  })

  it('an oversized hint changes nothing but a reload from the store', async () => {
    const { store, tokens, ring } = await setup()
    const { token, record } = await tokens.issue({ subject: 'live' })
    const { wrapped, seen } = observed(store)
    const b = createTokenService({
      store: wrapped,
      keyRing: ring,
      clock: createFrozenClock(START),
      log: silent,
      issuer: ISS,
      audience: AUD,
      lifetimes: LIFETIMES,
      leewaySeconds: LEEWAY,
    })
    await b.refreshRevocations()
    await accepted(b, token)
    const reloadsBefore = seen.listRevoked
    const flood = Array.from({ length: 200_000 }, (_, i) => ({ jti: `made-up-${i}`, expiresAt: FAR }))
    flood.push({ jti: record.jti, expiresAt: FAR })
    await b.markRevoked(flood)
    assert.equal(b.revokedCount(), 0, 'nothing taken into memory')
    assert.equal(seen.getToken, 0, 'not looked up one by one')
    assert.equal(seen.listRevoked, reloadsBefore + 1, 'reloaded instead')
    await accepted(b, token)
    // Malformed entries are skipped without a lookup.
    await b.markRevoked([
      { jti: '', expiresAt: 1 },
      { jti: 'has space', expiresAt: 1 },
      { jti: 'x'.repeat(200), expiresAt: 1 },
      { jti: 'nul\u0000', expiresAt: 1 },
      null as unknown as { jti: string; expiresAt: number },
    ])
    assert.equal(seen.getToken, 0)
  })

  it('store unreachable: an unconfirmed hint is not taken; the next reload finds the revocation', async () => {
    const { store, tokens, ring } = await setup()
    const { token, record } = await tokens.issue({ subject: 'during-outage' })
    const { wrapped, setDown } = observed(store)
    const { log, lines } = recordingLogger()
    const b = createTokenService({
      store: wrapped,
      keyRing: ring,
      clock: createFrozenClock(START),
      log,
      issuer: ISS,
      audience: AUD,
      lifetimes: LIFETIMES,
      leewaySeconds: LEEWAY,
    })
    await b.refreshRevocations()
    await accepted(b, token)
    await tokens.revoke(record.jti, false)
    setDown(true)
    await b.markRevoked([{ jti: record.jti, expiresAt: FAR }])
    await accepted(b, token)
    assert.ok(lines.some((l) => (l.obj as { event?: string }).event === 'revocation_hint_unconfirmed'))
    setDown(false)
    await b.refreshRevocations()
    await refused(b, token, 'invalid_token', /^token revoked$/)
  })
})
