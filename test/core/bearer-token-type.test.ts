// Gatehouse 8, item 4: only access tokens pass as bearer tokens (RFC 9068 §2.1, §4; OIDC Core §2).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose'
import { type BearerVerifierOptions, createBearerVerifier } from '../../src/core/bearer.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { START } from './fixtures.ts'

const ISS = 'https://idp.example'
const CLIENT = 'gatehouse'
const now = Math.floor(START / 1000)
const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' }] })

function verifier(extra: Partial<BearerVerifierOptions> = {}) {
  return createBearerVerifier(
    {
      issuer: ISS,
      audiences: [CLIENT],
      audienceClaim: 'aud',
      algorithms: ['RS256'],
      leewaySeconds: 30,
      mapping: { userClaim: 'sub', groupsClaim: 'groups' },
      clock: createFrozenClock(START),
      ...extra,
    },
    jwks,
  )
}

function sign(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  const payload = { sub: 'u1', iss: ISS, aud: [CLIENT, 'https://api.example'], iat: now, exp: now + 300 }
  return new SignJWT({ ...payload, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1', ...header })
    .sign(privateKey)
}

async function refusal(v: ReturnType<typeof verifier>, token: string): Promise<string> {
  const r = await v.verify(token)
  assert.equal(r.ok, false)
  assert.ok(!r.ok)
  assert.equal(r.code, 'invalid_token')
  return r.reason
}

test('typ lenient (default): at+jwt, JWT or none pass; any other type is refused', async () => {
  const v = verifier()
  for (const typ of ['at+jwt', 'application/at+jwt', 'AT+JWT', 'JWT', 'jwt', undefined]) {
    const r = await v.verify(await sign({}, typ === undefined ? {} : { typ }))
    assert.ok(r.ok, `typ ${typ}`)
  }
  for (const typ of ['logout+jwt', 'secevent+jwt', 'dpop+jwt', 'id_token+jwt']) {
    assert.match(await refusal(v, await sign({}, { typ })), /^id_token_as_access_token: typ/)
  }
})

test('typ strict: only at+jwt passes', async () => {
  const v = verifier({ accessTokenTyp: 'strict' })
  assert.ok((await v.verify(await sign({}, { typ: 'at+jwt' }))).ok)
  assert.ok((await v.verify(await sign({}, { typ: 'application/at+jwt' }))).ok)
  assert.match(await refusal(v, await sign({}, { typ: 'JWT' })), /access_token_typ: strict/)
  assert.match(await refusal(v, await sign()), /typ missing/)
})

test('a token carrying nonce, at_hash or c_hash is an ID token, whatever its audience', async () => {
  const v = verifier()
  for (const claim of ['nonce', 'at_hash', 'c_hash']) {
    const reason = await refusal(v, await sign({ [claim]: 'x' }))
    assert.equal(reason, `id_token_as_access_token: it carries ${claim}`)
  }
  // Even typed at+jwt: a provider would not put these in an access token.
  assert.match(await refusal(v, await sign({ at_hash: 'x' }, { typ: 'at+jwt' })), /at_hash/)
})

test('Keycloak: payload typ ID is refused; a Bearer access token of Keycloak < 25 carrying nonce passes', async () => {
  const v = verifier()
  assert.match(await refusal(v, await sign({ typ: 'ID' })), /claim typ is ID/)
  assert.ok((await v.verify(await sign({ typ: 'Bearer', nonce: 'n' }))).ok)
  assert.match(await refusal(v, await sign({ typ: 'Bearer', at_hash: 'x' })), /at_hash/)
})

test('audiences not configured: a token whose only audience is the client id is refused unless typed at+jwt', async () => {
  const v = verifier({ idTokenAudience: CLIENT })
  for (const aud of [CLIENT, [CLIENT]]) {
    assert.match(await refusal(v, await sign({ aud })), /only audience is the client id/)
    assert.match(await refusal(v, await sign({ aud }, { typ: 'JWT' })), /only audience is the client id/)
    assert.ok((await v.verify(await sign({ aud }, { typ: 'at+jwt' }))).ok, 'RFC 9068 typed')
  }
  assert.ok((await v.verify(await sign({ aud: [CLIENT, 'account'] }))).ok, 'another audience too')
  // Listed explicitly (no idTokenAudience): the operator accepts client-id audience tokens.
  assert.ok((await verifier().verify(await sign({ aud: CLIENT }))).ok)
})

test('Cognito: access tokens (client_id claim, no aud) pass; its ID token is refused', async () => {
  const v = verifier({ audienceClaim: 'client_id', requiredClaims: { token_use: 'access' } })
  const access = await sign({ aud: undefined, client_id: CLIENT, token_use: 'access' })
  assert.ok((await v.verify(access)).ok)
  const id = await sign({ aud: CLIENT, token_use: 'id', at_hash: 'x', 'cognito:username': 'u' })
  assert.match(await refusal(v, id), /^id_token_as_access_token|client_id claim/)
})
