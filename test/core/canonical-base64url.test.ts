/**
 * Non-canonical base64url (Gatehouse 8, item 7): a token whose last character is swapped for one with
 * the same data bits (the unused low bits set) decodes to the same bytes and would verify, while
 * missing every cache keyed by the exact string. Each such sibling is refused before any crypto, by the
 * bearer verifier, the API token service and the session codec.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { createLocalJWKSet, exportJWK, generateKeyPair, type JWTVerifyGetKey, SignJWT } from 'jose'
import { createBearerVerifier } from '../../src/core/bearer.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { base64url, isCanonicalBase64url, isCanonicalCompact } from '../../src/core/encoding.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createSessionCodec } from '../../src/core/session-codec.ts'
import { createKeyRing } from '../../src/keys/key-ring.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { createTokenService, TOKEN_PREFIX } from '../../src/tokens/token-service.ts'
import { API, facts, START, setup } from './fixtures.ts'

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/** Every other spelling of `segment`'s last character with the same data bits. */
function siblings(segment: string): string[] {
  const spare = segment.length % 4 === 2 ? 4 : segment.length % 4 === 3 ? 2 : 0
  const value = ALPHABET.indexOf(segment.at(-1)!)
  const out: string[] = []
  for (let low = 1; low < 1 << spare; low++) out.push(segment.slice(0, -1) + ALPHABET[value ^ low]!)
  return out
}

/** The token with its last part's last character swapped for a same-bits sibling. */
function siblingToken(token: string): string {
  const cut = token.lastIndexOf('.')
  const tail = siblings(token.slice(cut + 1))
  assert.ok(tail.length > 0, 'the last part has spare bits')
  return token.slice(0, cut + 1) + tail[0]!
}

describe('isCanonicalBase64url', () => {
  test('property: the encoding of any bytes is canonical, and none of its siblings is', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const encoded = base64url(bytes)
        assert.ok(isCanonicalBase64url(encoded), encoded)
        for (const s of siblings(encoded)) assert.ok(!isCanonicalBase64url(s), `${s} (sibling of ${encoded})`)
      }),
      { numRuns: 2000 },
    )
  })

  test('other alphabets, padding and impossible lengths are not base64url', () => {
    for (const text of ['A', 'AAAAA', 'ab+c', 'ab/c', 'QQ==', 'Q Q', 'é', 'AB.C'])
      assert.ok(!isCanonicalBase64url(text), text)
    assert.ok(isCanonicalBase64url(''))
    assert.ok(isCanonicalCompact('eyA.eyA.QQ', 3))
    assert.ok(isCanonicalCompact('eyA..AAAA.QQ.AA', 5), 'an empty part is canonical')
    assert.ok(!isCanonicalCompact('eyA.eyA.QR', 3))
    assert.ok(!isCanonicalCompact('eyA.eyA.QQ', 5))
    assert.ok(!isCanonicalCompact('eyA.eyA.QQ.QQ', 3))
  })
})

describe('a same-bits sibling of a valid token is refused before any crypto', () => {
  test('provider bearer tokens: refused invalid_token, with no key lookup; the core answers 401', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
    const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] })
    let lookups = 0
    const getKey: JWTVerifyGetKey = (header, token) => {
      lookups++
      return jwks(header, token)
    }
    const now = Math.floor(START / 1000)
    const bearer = createBearerVerifier(
      {
        issuer: 'https://idp.example',
        audiences: ['gatehouse'],
        audienceClaim: 'aud',
        algorithms: ['ES256'],
        leewaySeconds: 30,
        mapping: { userClaim: 'sub', groupsClaim: 'groups' },
        clock: createFrozenClock(START),
      },
      getKey,
    )
    const token = await new SignJWT({ sub: 'u1', scope: 'read' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('https://idp.example')
      .setAudience('gatehouse')
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(privateKey)
    assert.ok((await bearer.verify(token)).ok)
    const before = lookups
    for (const s of siblings(token.slice(token.lastIndexOf('.') + 1))) {
      const variant = token.slice(0, token.lastIndexOf('.') + 1) + s
      const r = await bearer.verify(variant)
      assert.equal(r.ok, false, 'a sibling spelling is not accepted')
      if (!r.ok) assert.equal(r.code, 'invalid_token')
    }
    assert.equal(lookups, before, 'no sibling reached the key lookup (no crypto)')

    const g = await setup({}, 'https://app.example.com', { bearer })
    const d = await g.gatehouse.handle(
      facts('/api/x', { headers: { ...API, authorization: `Bearer ${siblingToken(token)}` } }),
    )
    assert.equal(d.kind === 'respond' && d.status, 401)
    assert.match(d.kind === 'respond' ? (d.headers['www-authenticate'] ?? '') : '', /error="invalid_token"/)
  })

  test("Gatehouse's API tokens: refused invalid_token", async () => {
    const clock = createFrozenClock(START)
    const store = createMemoryStore({ clock })
    const keyRing = await createKeyRing({
      store,
      clock,
      log: silentLogger,
      encryptionSecrets: ['at-rest secret for the canonical tests, 32+ chars'],
      signingPeriodSeconds: 30 * 86_400,
      publishAheadSeconds: 86_400,
      retentionSeconds: 31 * 86_400,
    })
    const tokens = createTokenService({
      store,
      keyRing,
      clock,
      log: silentLogger,
      issuer: 'https://gatehouse.example',
      audience: 'https://api.example',
      lifetimes: {
        apiToken: { ttlSeconds: 86_400, maxTtlSeconds: 30 * 86_400 },
        derivedToken: { ttlSeconds: 3600, maxTtlSeconds: 86_400 },
      },
      leewaySeconds: 30,
    })
    await tokens.refreshRevocations()
    const { token } = await tokens.issue({ subject: 'ci' })
    assert.ok(token.startsWith(TOKEN_PREFIX))
    assert.ok((await tokens.verify(token)).ok)
    const r = await tokens.verify(siblingToken(token))
    assert.equal(r.ok, false)
    if (!r.ok) {
      assert.equal(r.code, 'invalid_token')
      assert.match(r.reason, /canonical/)
    }
  })

  test('session cookies and sealed sign-in state: refused as malformed, and repeats are cached', async () => {
    const clock = createFrozenClock(START)
    const codec = await createSessionCodec({
      secrets: ['a-test-secret-that-is-long-enough-0123456789'],
      cookieName: 'gh',
      secure: false,
      clock,
    })
    const now = Math.floor(START / 1000)
    const [set] = await codec.write({
      sid: 's1',
      identity: { sub: 'u1', user: 'u1', groups: [] },
      signedInAt: now,
      expiresAt: now + 3600,
      maxExpiresAt: now + 7200,
    })
    const cookie = set!.split(';')[0]!
    const value = cookie.slice('gh='.length)
    const fresh = await createSessionCodec({
      secrets: ['a-test-secret-that-is-long-enough-0123456789'],
      cookieName: 'gh',
      secure: false,
      clock,
    })
    assert.ok((await fresh.read(cookie)).ok, 'the canonical value decrypts')
    const variant = `gh=${siblingToken(value)}`
    const first = await fresh.read(variant)
    assert.deepEqual(first, { ok: false, reason: 'malformed', repeats: 0 })
    assert.deepEqual(await fresh.read(variant), { ok: false, reason: 'malformed', repeats: 1 })

    const sealed = await codec.seal({ st: 'x' }, now + 600)
    assert.deepEqual(await codec.unseal(sealed), { st: 'x', exp: now + 600 })
    assert.equal(await codec.unseal(siblingToken(sealed)), undefined)
  })
})
