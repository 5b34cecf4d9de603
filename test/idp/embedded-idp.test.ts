import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, before, describe, it } from 'node:test'
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose'
import * as oauth from 'oauth4webapi'

import { createEmbeddedIdP } from '../../src/idp/embedded-idp.ts'
import { type CookieClient, createCookieClient } from '../helpers/cookie-client.ts'
import {
  DEMO_USER,
  formAction,
  hiddenInputs,
  signIn,
  startTestIdP,
  type TestIdP,
} from '../helpers/test-idp.ts'

const REDIRECT_URI = 'http://127.0.0.1:1/callback'
const POST_LOGOUT_URI = 'http://127.0.0.1:1/signed-out'
const AUDIENCE = 'urn:test:gateway'
const insecure = { [oauth.allowInsecureRequests]: true }

interface Flow {
  url: URL
  verifier: string
  state: string
  nonce: string
}

interface RP {
  as: oauth.AuthorizationServer
  client: oauth.Client
  testIdP: TestIdP
  jwks: () => Promise<ReturnType<typeof createLocalJWKSet>>
}

async function connect(testIdP: TestIdP): Promise<RP> {
  const issuer = new URL(testIdP.issuer)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure))
  return {
    as,
    client: { client_id: testIdP.clientId },
    testIdP,
    jwks: async () => createLocalJWKSet((await (await fetch(as.jwks_uri!)).json()) as JSONWebKeySet),
  }
}

async function startFlow(rp: RP, extra: Record<string, string> = {}): Promise<Flow> {
  const verifier = oauth.generateRandomCodeVerifier()
  const state = oauth.generateRandomState()
  const nonce = oauth.generateRandomNonce()
  const url = new URL(rp.as.authorization_endpoint!)
  url.search = new URLSearchParams({
    client_id: rp.testIdP.clientId,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: 'openid email profile groups',
    state,
    nonce,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    ...extra,
  }).toString()
  return { url, verifier, state, nonce }
}

async function redeem(rp: RP, flow: Flow, callback: URL): Promise<oauth.TokenEndpointResponse> {
  const params = oauth.validateAuthResponse(rp.as, rp.client, callback, flow.state)
  const response = await oauth.authorizationCodeGrantRequest(
    rp.as,
    rp.client,
    oauth.ClientSecretBasic(rp.testIdP.clientSecret),
    params,
    REDIRECT_URI,
    flow.verifier,
    insecure,
  )
  return oauth.processAuthorizationCodeResponse(rp.as, rp.client, response, { expectedNonce: flow.nonce })
}

async function signInAndRedeem(rp: RP, browser: CookieClient = createCookieClient()) {
  const flow = await startFlow(rp)
  const callback = await signIn(browser, flow.url, DEMO_USER.username, DEMO_USER.password)
  return { browser, flow, callback, tokens: await redeem(rp, flow, callback) }
}

// Raw token request, to see the refusal itself (status and error) rather than a client library's exception.
async function refreshRaw(
  rp: RP,
  refreshToken: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const basic = Buffer.from(`${rp.testIdP.clientId}:${rp.testIdP.clientSecret}`).toString('base64')
  const response = await fetch(rp.as.token_endpoint!, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

async function verifyAccessToken(rp: RP, accessToken: string) {
  return jwtVerify(accessToken, await rp.jwks(), {
    issuer: rp.testIdP.issuer,
    audience: AUDIENCE,
    typ: 'at+jwt',
  })
}

describe('embedded IdP', () => {
  let testIdP: TestIdP
  let rp: RP

  before(async () => {
    testIdP = await startTestIdP({
      redirectUris: [REDIRECT_URI],
      postLogoutRedirectUris: [POST_LOGOUT_URI],
      accessTokenAudience: AUDIENCE,
    })
    rp = await connect(testIdP)
  })
  after(() => testIdP.close())

  it('publishes discovery for a code-flow-only provider mounted under the issuer path', () => {
    const { as } = rp
    assert.equal(as.issuer, testIdP.issuer)
    assert.equal(as.authorization_endpoint, `${testIdP.issuer}/auth`)
    assert.equal(as.token_endpoint, `${testIdP.issuer}/token`)
    assert.equal(as.jwks_uri, `${testIdP.issuer}/jwks`)
    assert.equal(as.end_session_endpoint, `${testIdP.issuer}/session/end`)
    assert.deepEqual(as.response_types_supported, ['code'])
    assert.deepEqual(as.code_challenge_methods_supported, ['S256'])
    assert.deepEqual(as.grant_types_supported, ['authorization_code', 'refresh_token'])
    assert.deepEqual(as.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post'])
    for (const scope of ['openid', 'email', 'profile', 'groups', 'offline_access']) {
      assert.ok(as.scopes_supported?.includes(scope), scope)
    }
    assert.equal(
      as.userinfo_endpoint,
      undefined,
      'access tokens are for the gateway; claims are in the ID token',
    )
  })

  it('runs the code flow with PKCE: ID token with the profile claims, JWT access token for the gateway', async () => {
    const { callback, tokens } = await signInAndRedeem(rp)
    assert.equal(`${callback.origin}${callback.pathname}`, REDIRECT_URI)
    assert.equal(callback.searchParams.get('iss'), testIdP.issuer)

    const claims = oauth.getValidatedIdTokenClaims(tokens)!
    const alice = testIdP.users.find('alice')!
    assert.equal(claims.sub, alice.sub)
    assert.notEqual(claims.sub, 'alice')
    assert.equal(claims['preferred_username'], 'alice')
    assert.equal(claims['email'], DEMO_USER.email)
    assert.equal(claims['email_verified'], true)
    assert.equal(claims['name'], DEMO_USER.name)
    assert.deepEqual(claims['groups'], ['admins', 'staff'])
    assert.equal(claims.aud, testIdP.clientId)

    // The ID token's signature, checked against the published keys.
    const idToken = await jwtVerify(tokens.id_token!, await rp.jwks(), {
      issuer: testIdP.issuer,
      audience: testIdP.clientId,
    })
    assert.deepEqual(idToken.payload['groups'], ['admins', 'staff'])

    const accessToken = await verifyAccessToken(rp, tokens.access_token)
    assert.equal(accessToken.payload.sub, alice.sub)
    assert.equal(accessToken.payload['client_id'], testIdP.clientId)
    assert.equal(accessToken.protectedHeader.alg, 'RS256')
    assert.equal(tokens.token_type, 'bearer')
    assert.equal(tokens.expires_in, 3600)
    assert.ok(tokens.refresh_token, 'a refresh token is always issued for the code flow')
  })

  it('refreshes with rotation: new JWT access token, ID token and refresh token; the old one is refused', async () => {
    const { tokens } = await signInAndRedeem(rp)
    const response = await oauth.refreshTokenGrantRequest(
      rp.as,
      rp.client,
      oauth.ClientSecretPost(testIdP.clientSecret),
      tokens.refresh_token!,
      insecure,
    )
    const refreshed = await oauth.processRefreshTokenResponse(rp.as, rp.client, response)
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token)
    assert.notEqual(refreshed.access_token, tokens.access_token)
    const accessToken = await verifyAccessToken(rp, refreshed.access_token)
    assert.equal(accessToken.payload.sub, testIdP.users.find('alice')!.sub)
    assert.deepEqual(oauth.getValidatedIdTokenClaims(refreshed)?.['groups'], ['admins', 'staff'])

    const reused = await refreshRaw(rp, tokens.refresh_token!)
    assert.equal(reused.status, 400)
    assert.equal(reused.body['error'], 'invalid_grant')
    // RFC 9700 §4.14.2: reuse of a rotated refresh token revokes the whole grant, the new token included.
    const successor = await refreshRaw(rp, refreshed.refresh_token!)
    assert.equal(successor.status, 400)
    assert.equal(successor.body['error'], 'invalid_grant')
  })

  it('revokes a refresh token (RFC 7009), which ends its grant', async () => {
    const { tokens } = await signInAndRedeem(rp)
    const response = await oauth.revocationRequest(
      rp.as,
      rp.client,
      oauth.ClientSecretBasic(testIdP.clientSecret),
      tokens.refresh_token!,
      insecure,
    )
    await oauth.processRevocationResponse(response)
    const refused = await refreshRaw(rp, tokens.refresh_token!)
    assert.equal(refused.body['error'], 'invalid_grant')
  })

  it('serves a plain, escaped sign-in form without scripts', async () => {
    const flow = await startFlow(rp, { login_hint: '"><script>alert(1)</script>' })
    const browser = createCookieClient()
    const { response, hops } = await browser.follow(flow.url)
    assert.equal(response.status, 200)
    assert.match(hops.at(-1)!, new RegExp(`^${testIdP.issuer}/interaction/[\\w-]+$`))
    const html = await response.text()
    assert.match(html, /<form method="post" action="\/_idp\/interaction\/[\w-]+\/login">/)
    assert.match(html, /<input id="username" name="username"/)
    assert.match(html, /<input id="password" name="password" type="password"/)
    assert.match(html, /<button id="sign-in" type="submit">/)
    assert.ok(!html.includes('<script'), 'login_hint is escaped and there is no script of ours')
    assert.ok(html.includes('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"'))
    const csp = response.headers.get('content-security-policy') ?? ''
    assert.match(csp, /default-src 'none'/)
    assert.doesNotMatch(csp, /script-src/)
    assert.equal(response.headers.get('cache-control'), 'no-store')
    assert.equal(response.headers.get('x-frame-options'), 'DENY')
  })

  it('answers wrong credentials with 401 and the form again, and no code; the right ones then succeed', async () => {
    const flow = await startFlow(rp)
    const browser = createCookieClient()
    const { response: page, url: pageUrl } = await browser.follow(flow.url)
    const action = new URL(formAction(await page.text())!, pageUrl)

    for (const [username, password] of [
      ['alice', 'wrong horse'],
      ['mallory', 'correct horse'],
    ] as const) {
      const refused = await browser.postForm(action, { username, password })
      assert.equal(refused.status, 401)
      assert.equal(refused.headers.get('location'), null)
      const html = await refused.text()
      assert.match(html, /Wrong username or password\./)
      assert.ok(html.includes(`value="${username}"`), 'the username is kept')
      assert.equal(formAction(html), action.pathname)
    }

    const accepted = await browser.postForm(action, { username: 'alice', password: 'correct horse' })
    assert.equal(accepted.status, 303)
    const callback = await signIn(browser, new URL(accepted.headers.get('location')!, action), 'x', 'x')
    assert.ok(callback.searchParams.get('code'))
    assert.equal(callback.searchParams.get('state'), flow.state)
  })

  it('refuses an authorization request without a PKCE challenge, or with the plain method', async () => {
    for (const [name, change] of [
      ['missing', (url: URL) => url.searchParams.delete('code_challenge')],
      [
        'plain',
        (url: URL) => {
          url.searchParams.set('code_challenge', 'x'.repeat(43))
          url.searchParams.set('code_challenge_method', 'plain')
        },
      ],
    ] as const) {
      const flow = await startFlow(rp)
      if (name === 'missing') flow.url.searchParams.delete('code_challenge_method')
      change(flow.url)
      const response = await createCookieClient().request(flow.url)
      assert.equal(response.status, 303, name)
      const location = new URL(response.headers.get('location')!)
      assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI)
      assert.equal(location.searchParams.get('error'), 'invalid_request', name)
      assert.equal(location.searchParams.get('code'), null)
      assert.equal(location.searchParams.get('state'), flow.state)
    }
  })

  it('refuses a code redeemed with the wrong PKCE verifier', async () => {
    const flow = await startFlow(rp)
    const callback = await signIn(createCookieClient(), flow.url, 'alice', 'correct horse')
    await assert.rejects(redeem(rp, { ...flow, verifier: oauth.generateRandomCodeVerifier() }, callback), {
      error: 'invalid_grant',
    })
  })

  it('signs in once per browser: the next authorization, even with prompt=consent, needs no page', async () => {
    const { browser } = await signInAndRedeem(rp)
    for (const extra of [{}, { prompt: 'consent' }] as Record<string, string>[]) {
      const flow = await startFlow(rp, extra)
      const callback = await signIn(browser, flow.url, 'nobody', 'unused')
      const tokens = await redeem(rp, flow, callback)
      assert.equal(oauth.getValidatedIdTokenClaims(tokens)?.['preferred_username'], 'alice')
    }
  })

  it('scopes its session cookie to the mount path, HttpOnly and SameSite=Lax', async () => {
    const { browser } = await signInAndRedeem(rp)
    const session = browser.cookies(`${testIdP.issuer}/auth`).find((cookie) => cookie.name === '_idp_session')
    assert.ok(session)
    assert.equal(session.path, '/_idp')
    assert.equal(session.httpOnly, true)
    assert.equal(session.sameSite, 'lax')
    assert.equal(browser.cookies(`http://127.0.0.1:${testIdP.port}/app`).length, 0)
  })

  it('logs out through the end_session endpoint with a confirm form, then requires a new sign-in', async () => {
    const { browser, tokens } = await signInAndRedeem(rp)
    const endSession = new URL(rp.as.end_session_endpoint!)
    endSession.search = new URLSearchParams({
      id_token_hint: tokens.id_token!,
      post_logout_redirect_uri: POST_LOGOUT_URI,
      state: 'bye',
    }).toString()

    const confirm = await browser.request(endSession)
    assert.equal(confirm.status, 200)
    const html = await confirm.text()
    const form = html.slice(html.indexOf('<form'), html.indexOf('</form>'))
    assert.match(form, /<button id="logout-confirm" type="submit" name="logout" value="yes">/)
    assert.ok(!html.includes('<script'))

    const done = await browser.postForm(new URL(formAction(html)!, endSession), {
      ...hiddenInputs(html),
      logout: 'yes',
    })
    assert.equal(done.status, 303)
    assert.equal(done.headers.get('location'), `${POST_LOGOUT_URI}?state=bye`)

    const refused = await refreshRaw(rp, tokens.refresh_token!)
    assert.equal(refused.body['error'], 'invalid_grant', 'logout revokes the grant')
    const again = await browser.follow((await startFlow(rp)).url)
    assert.match(await again.response.text(), /id="sign-in"/, 'the IdP session is gone')
  })

  it('renders its own error page, without stack traces', async () => {
    const url = new URL(rp.as.authorization_endpoint!)
    url.search = new URLSearchParams({ client_id: 'nope', response_type: 'code', scope: 'openid' }).toString()
    const response = await fetch(url, { headers: { accept: 'text/html' } })
    assert.equal(response.status, 400)
    const html = await response.text()
    assert.match(html, /invalid_client/)
    assert.doesNotMatch(html, /\bat .*\.js:\d+|node_modules|Error:/)
    assert.match(response.headers.get('content-security-policy') ?? '', /default-src 'none'/)
  })

  it('guards its interaction routes: unknown uid, wrong method, wrong body type, oversized body', async () => {
    const base = `http://127.0.0.1:${testIdP.port}/_idp/interaction`
    const noCookie = await fetch(`${base}/abc`)
    assert.equal(noCookie.status, 400)
    assert.match(await noCookie.text(), /Sign-in expired/)

    // A real interaction, but the URL names another one.
    const browser = createCookieClient()
    const { url } = await browser.follow((await startFlow(rp)).url)
    const uid = url.slice(url.lastIndexOf('/') + 1)
    const forged = await browser.postForm(`${base}/${uid}x/login`, {
      username: 'alice',
      password: 'correct horse',
    })
    assert.equal(forged.status, 400, 'the interaction cookie is path-scoped to its own uid')

    assert.equal((await fetch(`${base}/${uid}/login`)).status, 405)
    const json = await browser.request(`${base}/${uid}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })
    assert.equal(json.status, 415)
    const huge = await browser.request(`${base}/${uid}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `username=alice&password=${'x'.repeat(20_000)}`,
    })
    assert.equal(huge.status, 413)
    assert.equal((await fetch(`http://127.0.0.1:${testIdP.port}/_idpx`)).status, 404)
  })
})

describe('embedded IdP persistence', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-idp-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('keeps keys, grants and sessions across a restart on the same database file', async () => {
    const file = join(dir, 'idp.db')
    const secret = 'a-fixed-client-secret-for-both-runs'
    const options = { redirectUris: [REDIRECT_URI], clientSecret: secret, accessTokenAudience: AUDIENCE }

    const firstDb = new DatabaseSync(file)
    const first = await startTestIdP({ ...options, db: firstDb, keepAlive: false })
    const firstRp = await connect(first)
    const { browser, tokens } = await signInAndRedeem(firstRp)
    const firstKeys = (await (await fetch(firstRp.as.jwks_uri!)).json()) as JSONWebKeySet
    await first.close()
    firstDb.close()

    const secondDb = new DatabaseSync(file)
    const second = await startTestIdP({ ...options, db: secondDb, port: first.port })
    try {
      assert.equal(second.issuer, first.issuer)
      const secondRp = await connect(second)
      const secondKeys = (await (await fetch(secondRp.as.jwks_uri!)).json()) as JSONWebKeySet
      assert.deepEqual(secondKeys, firstKeys)
      assert.deepEqual(
        secondKeys.keys.map((key) => key.alg),
        ['RS256', 'ES256'],
      )
      assert.ok(
        secondKeys.keys.every((key) => key['d'] === undefined && key['p'] === undefined),
        'public only',
      )

      // A token from before the restart still verifies against the restarted IdP's keys.
      const accessToken = await verifyAccessToken(secondRp, tokens.access_token)
      assert.equal(accessToken.payload.sub, second.users.find('alice')!.sub)
      assert.equal(decodeProtectedHeader(tokens.id_token!).kid, secondKeys.keys[0]!.kid)

      // The refresh token and the browser session (signed with the persisted cookie key) survive too.
      const refreshed = await refreshRaw(secondRp, tokens.refresh_token!)
      assert.equal(refreshed.status, 200)
      const flow = await startFlow(secondRp)
      const callback = await signIn(browser, flow.url, 'nobody', 'unused')
      assert.ok(callback.searchParams.get('code'))
    } finally {
      await second.close()
      secondDb.close()
    }
  })
})

describe('createEmbeddedIdP', () => {
  it('builds its URLs from the issuer and marks cookies Secure when the issuer is https', async () => {
    const idp = await createEmbeddedIdP({
      issuer: 'https://login.example.com/_idp',
      db: new DatabaseSync(':memory:'),
      clients: [{ client_id: 'c', client_secret: 's', redirect_uris: ['https://app.example.com/cb'] }],
      accessTokenAudience: 'c',
    })
    const server = createServer(idp.handler)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const discovery = (await (
        await fetch(`${origin}/_idp/.well-known/openid-configuration`)
      ).json()) as Record<string, string>
      assert.equal(discovery['authorization_endpoint'], 'https://login.example.com/_idp/auth')

      const authorize = new URL(`${origin}/_idp/auth`)
      authorize.search = new URLSearchParams({
        client_id: 'c',
        redirect_uri: 'https://app.example.com/cb',
        response_type: 'code',
        scope: 'openid',
        code_challenge: await oauth.calculatePKCECodeChallenge(oauth.generateRandomCodeVerifier()),
        code_challenge_method: 'S256',
      }).toString()
      const response = await fetch(authorize, { redirect: 'manual' })
      assert.equal(response.status, 303)
      const cookies = response.headers.getSetCookie()
      assert.ok(cookies.length > 0)
      for (const cookie of cookies) assert.match(cookie, /; secure/i, cookie)
    } finally {
      server.close()
      server.closeAllConnections()
      await idp.close()
    }
  })

  it('answers 503 once closed', async () => {
    const idp = await createEmbeddedIdP({
      issuer: 'http://127.0.0.1:1/_idp',
      db: new DatabaseSync(':memory:'),
      clients: [{ client_id: 'c', client_secret: 's', redirect_uris: ['http://127.0.0.1:1/cb'] }],
      accessTokenAudience: 'c',
    })
    await idp.close()
    const server = createServer(idp.handler)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as AddressInfo).port
      assert.equal((await fetch(`http://127.0.0.1:${port}/_idp/jwks`)).status, 503)
    } finally {
      server.close()
      server.closeAllConnections()
    }
  })

  it('rejects bad options at once, naming the option', async () => {
    const db = new DatabaseSync(':memory:')
    const good = {
      issuer: 'http://localhost:8080/_idp',
      db,
      clients: [{ client_id: 'c', client_secret: 's', redirect_uris: ['http://localhost:8080/cb'] }],
      accessTokenAudience: 'c',
    }
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ issuer: 'http://localhost:8080/_idp/' }, /^options\.issuer:/],
      [{ issuer: 'http://localhost:8080/_idp?x=1' }, /^options\.issuer:/],
      [{ issuer: 'ftp://localhost/_idp' }, /^options\.issuer:/],
      [{ clients: [] }, /^options\.clients:/],
      [
        { clients: [{ client_id: 'c', client_secret: 's', redirect_uris: [] }] },
        /^options\.clients\[0\]\.redirect_uris:/,
      ],
      [{ accessTokenAudience: '' }, /^options\.accessTokenAudience:/],
      [{ sessionTtlSeconds: 0 }, /^options\.sessionTtlSeconds:/],
      [{ db: {} }, /^options\.db:/],
    ]
    for (const [change, message] of cases) {
      await assert.rejects(createEmbeddedIdP({ ...good, ...change } as never), (error: unknown) => {
        assert.ok(error instanceof TypeError)
        assert.match(error.message, message)
        return true
      })
    }
  })
})
