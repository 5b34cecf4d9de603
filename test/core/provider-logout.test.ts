/**
 * Provider-initiated logout (Gatehouse 8): OIDC Back-Channel Logout 1.0 logout tokens checked one
 * refusal at a time, and the back- and front-channel endpoints of the core.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createLocalJWKSet, exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose'
import type { Decision, RequestFacts } from '../../src/core/decisions.ts'
import { BACKCHANNEL_LOGOUT_EVENT, createLogoutTokenVerifier } from '../../src/core/logout-token.ts'
import { createSessionRevocationList } from '../../src/core/session-revocations.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { API, facts, NAV, START, setup, signIn } from './fixtures.ts'

const ISSUER = 'https://idp.example/tenant'
const CLIENT = 'gatehouse-client'
const { privateKey, publicKey } = await generateKeyPair('RS256')
const { privateKey: otherKey } = await generateKeyPair('RS256')
const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' }] })
const now = Math.floor(START / 1000)
let jtis = 0

async function logoutToken(
  claims: JWTPayload = {},
  options: { key?: CryptoKey; typ?: string | null; omit?: string[] } = {},
): Promise<string> {
  const payload: JWTPayload = {
    iss: ISSUER,
    aud: CLIENT,
    iat: now,
    exp: now + 120,
    jti: `jti-${++jtis}`,
    sub: 'user-1',
    sid: 'op-session-1',
    events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    ...claims,
  }
  for (const k of options.omit ?? []) delete payload[k]
  const header: { alg: string; kid: string; typ?: string } = { alg: 'RS256', kid: 'k1' }
  if (options.typ !== null) header.typ = options.typ ?? 'logout+jwt'
  return new SignJWT(payload).setProtectedHeader(header).sign(options.key ?? privateKey)
}

const verifier = (clock = { now: () => START }) =>
  createLogoutTokenVerifier(
    { issuer: ISSUER, clientId: CLIENT, algorithms: ['RS256', 'ES256'], leewaySeconds: 30, clock },
    jwks,
  )

describe('logout token checks (OIDC Back-Channel Logout 1.0 §2.6)', () => {
  test('a good token names the provider session and the user; sessions signed in up to iat + leeway end', async () => {
    const r = await verifier()(await logoutToken())
    assert.equal(r.ok, true)
    if (!r.ok) return
    assert.equal(r.sid, 'op-session-1')
    assert.equal(r.sub, 'user-1')
    assert.equal(r.signedInBefore, now)
    assert.equal(r.replayUntil, now + 600 + 30)
    const typeless = await verifier()(await logoutToken({}, { typ: null }))
    assert.equal(typeless.ok, true, 'typ is optional')
    const subOnly = await verifier()(await logoutToken({}, { omit: ['sid'] }))
    assert.equal(subOnly.ok && subOnly.sub, 'user-1')
  })

  const refusals: Array<[string, () => Promise<string>, RegExp]> = [
    ['bad signature', () => logoutToken({}, { key: otherKey }), /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/],
    ['wrong aud', () => logoutToken({ aud: 'someone-else' }), /ERR_JWT_CLAIM_VALIDATION_FAILED.*aud/],
    ['wrong iss', () => logoutToken({ iss: 'https://evil.example' }), /ERR_JWT_CLAIM_VALIDATION_FAILED.*iss/],
    ['nonce present', () => logoutToken({ nonce: 'n-1' }), /nonce present/],
    ['missing events', () => logoutToken({}, { omit: ['events'] }), /events/],
    [
      'events without the logout event',
      () => logoutToken({ events: { 'urn:other': {} } }),
      /back-channel logout event/,
    ],
    [
      'events member not an object',
      () => logoutToken({ events: { [BACKCHANNEL_LOGOUT_EVENT]: 'yes' } }),
      /back-channel logout event/,
    ],
    ['neither sid nor sub', () => logoutToken({}, { omit: ['sid', 'sub'] }), /neither sid nor sub/],
    ['no jti', () => logoutToken({}, { omit: ['jti'] }), /jti/],
    ['no iat', () => logoutToken({}, { omit: ['iat'] }), /iat/],
    ['iat in the future', () => logoutToken({ iat: now + 120, exp: now + 240 }), /iat/],
    [
      'issued too long ago',
      () => logoutToken({ iat: now - 3600, exp: now + 60 }),
      /ERR_JWT_EXPIRED|maxTokenAge|too far/,
    ],
    ['expired', () => logoutToken({ iat: now - 200, exp: now - 100 }), /ERR_JWT_EXPIRED/],
    ['typed as an ID token', () => logoutToken({}, { typ: 'JWT' }), /typ is JWT/],
    ['not a JWT', async () => 'not-a-token', /not a JWT/],
  ]
  for (const [name, make, reason] of refusals) {
    test(`refused: ${name}`, async () => {
      const r = await verifier()(await make())
      assert.equal(r.ok, false)
      if (!r.ok) assert.match(r.reason, reason)
    })
  }

  test('refused: an algorithm outside the allowlist (HS256 with a shared secret)', async () => {
    const secret = new TextEncoder().encode('a shared secret that must never verify a logout token')
    const hs = await new SignJWT({
      iss: ISSUER,
      aud: CLIENT,
      iat: now,
      jti: 'hs',
      sid: 's',
      events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'logout+jwt' })
      .sign(secret)
    const r = await verifier()(hs)
    assert.equal(r.ok, false)
    if (!r.ok) assert.match(r.reason, /ERR_JOSE_ALG_NOT_ALLOWED/)
    assert.throws(
      () =>
        createLogoutTokenVerifier(
          {
            issuer: ISSUER,
            clientId: CLIENT,
            algorithms: ['HS256'],
            leewaySeconds: 0,
            clock: { now: () => START },
          },
          jwks,
        ),
      TypeError,
    )
  })
})

function respond(d: Decision) {
  assert.equal(d.kind, 'respond', `expected an answer, got ${JSON.stringify(d)}`)
  if (d.kind !== 'respond') throw new Error('unreachable')
  return d
}

function post(body: string, type = 'application/x-www-form-urlencoded'): RequestFacts {
  const f = facts('/oauth2/backchannel_logout', { method: 'POST', headers: { 'content-type': type } })
  return {
    ...f,
    async form(maxBytes) {
      if (type !== 'application/x-www-form-urlencoded') return 'unsupported_media_type'
      return body.length > maxBytes ? 'too_large' : new URLSearchParams(body)
    },
  }
}

async function gateway() {
  const store = createMemoryStore()
  let list: ReturnType<typeof createSessionRevocationList> | undefined
  const g = await setup({ providerIssuer: ISSUER }, 'https://app.example.com', {
    logoutToken: verifier(),
    sessionRevocations: { isRevoked: (s) => list!.isRevoked(s), revoke: (e) => list!.revoke(e) },
  })
  list = createSessionRevocationList({ store, clock: g.clock, log: silent, maxTtlSeconds: 7 * 86_400 })
  return { ...g, store }
}
const silent = { debug() {}, info() {}, warn() {}, error() {} }

describe('POST /oauth2/backchannel_logout', () => {
  test('a good logout token: 200 no-store, and the sessions of that provider session are refused from then on', async () => {
    const g = await gateway()
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-session-1' }
    const { cookie } = await signIn(g)
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-session-2' }
    const { cookie: other } = await signIn(g)
    const token = await logoutToken()
    const r = respond(await g.gatehouse.handle(post(`logout_token=${token}`)))
    assert.equal(r.status, 200)
    assert.equal(r.headers['cache-control'], 'no-store')
    assert.equal(
      respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
    assert.equal(
      (await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: other } }))).kind,
      'allow',
    )
    assert.deepEqual(
      (await g.store.listSessionRevocations(0)).map((e) => [e.kind, e.value, e.revokedAt]),
      [['psid', 'op-session-1', now]],
    )
    // The token is single use.
    const again = respond(await g.gatehouse.handle(post(`logout_token=${token}`)))
    assert.equal(again.status, 400)
    assert.deepEqual(JSON.parse(again.body), { error: 'invalid_request' })
    const lines = JSON.stringify(g.logs)
    assert.match(lines, /jti replayed/)
    assert.ok(!lines.includes(token), 'the token is never logged')
  })

  test('a token with only sub ends every session of that user', async () => {
    const g = await gateway()
    const { cookie } = await signIn(g)
    g.clock.advance(5000)
    const r = respond(
      await g.gatehouse.handle(
        post(`logout_token=${await logoutToken({ iat: now + 5 }, { omit: ['sid'] })}`),
      ),
    )
    assert.equal(r.status, 200)
    assert.equal(
      respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
  })

  test('bad requests: 400 invalid_request with the reason in the log', async () => {
    const g = await gateway()
    const cases: Array<[RequestFacts, RegExp]> = [
      [post('logout_token=x', 'application/json'), /not application\/x-www-form-urlencoded/],
      [post('other=1'), /no logout_token/],
      [
        post(`logout_token=${await logoutToken()}&logout_token=${await logoutToken()}`),
        /several logout_token/,
      ],
      [post(`logout_token=${'a'.repeat(40_000)}`), /body too large/],
      [post(`logout_token=${await logoutToken({ nonce: 'x' })}`), /nonce present/],
    ]
    for (const [request, reason] of cases) {
      const r = respond(await g.gatehouse.handle(request))
      assert.equal(r.status, 400)
      assert.equal(r.code, 'invalid_logout_token')
      assert.deepEqual(JSON.parse(r.body), { error: 'invalid_request' })
      assert.match(JSON.stringify(g.logs.at(-1)), reason)
    }
    // GET is not the endpoint.
    assert.equal(respond(await g.gatehouse.handle(facts('/oauth2/backchannel_logout'))).status, 404)
  })
})

describe('GET /oauth2/frontchannel_logout', () => {
  test('iss and sid of the provider: that provider session is refused, this browser’s cookie cleared; framable by the provider only', async () => {
    const g = await gateway()
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-fc-1' }
    const { cookie } = await signIn(g)
    const url = `/oauth2/frontchannel_logout?iss=${encodeURIComponent(ISSUER)}&sid=op-fc-1`
    const r = respond(await g.gatehouse.handle(facts(url, { headers: { ...NAV, cookie } })))
    assert.equal(r.status, 200)
    assert.equal(r.headers['cache-control'], 'no-store')
    assert.equal(r.headers['content-security-policy'], 'frame-ancestors https://idp.example')
    assert.match(r.headers['content-type']!, /^text\/html/)
    assert.ok(r.setCookies.some((c) => c.startsWith('__Host-gatehouse=;') && c.includes('Max-Age=0')))
    assert.equal(
      respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
  })

  test('another browser’s cookie is left alone; a wrong iss or a missing sid changes nothing', async () => {
    const g = await gateway()
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-fc-2' }
    const { cookie } = await signIn(g)
    const ok = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/frontchannel_logout?iss=${encodeURIComponent(ISSUER)}&sid=op-fc-other`, {
          headers: { ...NAV, cookie },
        }),
      ),
    )
    assert.equal(ok.status, 200)
    assert.deepEqual(ok.setCookies, [])
    for (const url of [
      `/oauth2/frontchannel_logout?iss=${encodeURIComponent('https://evil.example')}&sid=op-fc-2`,
      `/oauth2/frontchannel_logout?iss=${encodeURIComponent(ISSUER)}`,
      `/oauth2/frontchannel_logout?sid=op-fc-2`,
    ]) {
      const r = respond(await g.gatehouse.handle(facts(url, { headers: { ...NAV, cookie } })))
      assert.equal(r.status, 400)
      assert.equal(r.headers['content-security-policy'], 'frame-ancestors https://idp.example')
      assert.deepEqual(r.setCookies, [])
    }
    assert.equal((await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).kind, 'allow')
  })
})
