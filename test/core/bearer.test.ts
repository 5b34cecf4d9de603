import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLocalJWKSet, exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from 'jose'
import { createBearerVerifier } from '../../src/core/bearer.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { START } from './fixtures.ts'

const ISS = 'https://idp.example'
const AUD = 'gatehouse'

async function keys() {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }
  return { publicKey, privateKey, jwks: createLocalJWKSet({ keys: [jwk] }) }
}

function verifier(jwks: ReturnType<typeof createLocalJWKSet>, clock = createFrozenClock(START), extra = {}) {
  return createBearerVerifier(
    {
      issuer: ISS,
      audiences: [AUD],
      audienceClaim: 'aud',
      algorithms: ['RS256', 'ES256'],
      leewaySeconds: 30,
      mapping: { userClaim: 'sub', groupsClaim: 'groups' },
      clock,
      ...extra,
    },
    jwks,
  )
}

const now = Math.floor(START / 1000)
function sign(
  privateKey: CryptoKey,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
) {
  const payload = { sub: 'u1', groups: ['a'], iss: ISS, aud: AUD, iat: now, exp: now + 300, ...claims }
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: 'k1', ...header }).sign(privateKey)
}

test('a valid token gives the identity; a second verify is served from the cache', async () => {
  const k = await keys()
  const v = verifier(k.jwks)
  const token = await sign(k.privateKey)
  const r = await v.verify(token)
  assert.ok(r.ok)
  assert.equal(r.identity.sub, 'u1')
  assert.deepEqual(r.identity.groups, ['a'])
  assert.ok((await v.verify(token)).ok)
})

test('refusals: expired, not yet valid, wrong audience, wrong issuer, unknown kid, alg none, HS256 with the public key, garbage', async () => {
  const k = await keys()
  const v = verifier(k.jwks)
  const pem = await exportSPKI(k.publicKey)
  const hs = await new SignJWT({ sub: 'u1' })
    .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setExpirationTime(now + 300)
    .sign(new TextEncoder().encode(pem))
  const none = new UnsecuredJWT({ sub: 'u1' })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setExpirationTime(now + 300)
    .encode()
  const cases: Record<string, [string, string]> = {
    expired: [await sign(k.privateKey, { exp: now - 31 }), 'token_expired'],
    notYet: [await sign(k.privateKey, { nbf: now + 120 }), 'invalid_token'],
    audience: [await sign(k.privateKey, { aud: 'someone-else' }), 'invalid_token'],
    issuer: [await sign(k.privateKey, { iss: 'https://evil.example' }), 'invalid_token'],
    kid: [await sign(k.privateKey, {}, { kid: 'k2' }), 'invalid_token'],
    none: [none, 'invalid_token'],
    hs256: [hs, 'invalid_token'],
    garbage: ['not.a.jwt!', 'invalid_token'],
    empty: ['', 'invalid_token'],
    noSub: [await sign(k.privateKey, { sub: undefined }), 'invalid_token'],
  }
  for (const [name, [token, code]] of Object.entries(cases)) {
    const r = await v.verify(token)
    assert.equal(r.ok, false, name)
    if (!r.ok) assert.equal(r.code, code, `${name}: ${r.reason}`)
  }
})

test('a cached token stops passing once it expires', async () => {
  const k = await keys()
  const clock = createFrozenClock(START)
  const v = verifier(k.jwks, clock)
  const token = await sign(k.privateKey)
  assert.ok((await v.verify(token)).ok)
  clock.advance((300 + 31) * 1000)
  const r = await v.verify(token)
  assert.equal(r.ok, false)
})

test('Cognito access tokens: client_id instead of aud, token_use must be access', async () => {
  const k = await keys()
  const v = verifier(k.jwks, createFrozenClock(START), {
    audienceClaim: 'client_id',
    requiredClaims: { token_use: 'access' },
  })
  const make = (claims: Record<string, unknown>) =>
    new SignJWT({ sub: 'u1', 'cognito:groups': ['x'], ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(ISS)
      .setExpirationTime(now + 300)
      .sign(k.privateKey)
  assert.ok((await v.verify(await make({ client_id: AUD, token_use: 'access' }))).ok)
  assert.equal((await v.verify(await make({ client_id: 'other', token_use: 'access' }))).ok, false)
  assert.equal((await v.verify(await make({ client_id: AUD, token_use: 'id' }))).ok, false)
})

test('symmetric or unknown algorithms are refused at construction', () => {
  const jwks = createLocalJWKSet({ keys: [] })
  assert.throws(() => verifier(jwks, createFrozenClock(START), { algorithms: ['HS256'] }), TypeError)
  assert.throws(() => verifier(jwks, createFrozenClock(START), { algorithms: ['none'] }), TypeError)
  assert.throws(() => verifier(jwks, createFrozenClock(START), { algorithms: [] }), TypeError)
})
