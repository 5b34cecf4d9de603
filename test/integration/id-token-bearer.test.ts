/**
 * Gatehouse 8, item 4: an ID token is not an access token. The ID token leaks in the sign-out URL
 * (`id_token_hint`); whoever holds it must not be able to call APIs with it. Against a real
 * oidc-provider issuing JWT access tokens (resource indicators, RFC 9068).
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import * as oauth from 'oauth4webapi'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import type { ConfigInput } from '../../src/config/schema.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import type { Logger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SESSION_SECRET = 'id-token-bearer-session-secret-0123456789ab'
const API = 'https://api.example.test'

interface Logged {
  level: string
  obj: Record<string, unknown>
}

function recordingLogger(lines: Logged[]): Logger {
  const at = (level: string) => (obj: object) => lines.push({ level, obj: obj as Record<string, unknown> })
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

interface Setup {
  idp: TestIdP
  gateway: Gateway
  base: string
  lines: Logged[]
}

async function setup(
  upstream: RecordingUpstream,
  idpAudience: string | undefined,
  provider: Partial<ConfigInput['provider']> = {},
): Promise<Setup> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const idp = await startTestIdP({
    redirectUris: [`${base}/oauth2/callback`],
    postLogoutRedirectUris: [`${base}/`],
    ...(idpAudience === undefined ? {} : { accessTokenAudience: idpAudience }),
  })
  const lines: Logged[] = []
  const config = validateConfig({
    public_url: base,
    upstream: upstream.url,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-idtok-')),
    listen: { host: '127.0.0.1', port },
    provider: {
      issuer: idp.issuer,
      client_id: idp.clientId,
      client_secret: { env: 'CS' },
      scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      ...provider,
    },
    session: { secrets: [{ env: 'SS' }] },
    lifetimes: DEV_LIFETIMES,
    identity: { pass_access_token: true },
    shutdown: { drain: '1s' },
  })
  const gateway = await startGateway(config, {
    baseDir: process.cwd(),
    clock: createFrozenClock(Date.now()),
    log: recordingLogger(lines),
    admin: false,
    env: { CS: idp.clientSecret, SS: SESSION_SECRET },
  })
  return { idp, gateway, base, lines }
}

/**
 * The demo user signs in at the provider as the gateway's client would (code flow with PKCE and a nonce)
 * and the code is exchanged at its token endpoint: the real ID token (what leaks as `id_token_hint`) and
 * the real access token.
 */
async function tokens(s: Setup): Promise<{ accessToken: string; idToken: string }> {
  const issuer = new URL(s.idp.issuer)
  const http = { [oauth.allowInsecureRequests]: true }
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, http))
  const client = { client_id: s.idp.clientId }
  const redirectUri = `${s.base}/oauth2/callback`
  const verifier = oauth.generateRandomCodeVerifier()
  const nonce = oauth.generateRandomNonce()
  const authorize = new URL(as.authorization_endpoint!)
  authorize.search = new URLSearchParams({
    client_id: client.client_id,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: 'openid email profile',
    nonce,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  }).toString()
  const browser = createCookieClient({ fetch: browserFetch })
  const callback = await signIn(browser, authorize, DEMO_USER.username, DEMO_USER.password, s.idp.issuer)
  const params = oauth.validateAuthResponse(as, client, callback, oauth.skipStateCheck)
  const response = await oauth.authorizationCodeGrantRequest(
    as,
    client,
    oauth.ClientSecretBasic(s.idp.clientSecret),
    params,
    redirectUri,
    verifier,
    http,
  )
  const result = await oauth.processAuthorizationCodeResponse(as, client, response, {
    expectedNonce: nonce,
    requireIdToken: true,
  })
  return { accessToken: result.access_token, idToken: result.id_token! }
}

describe('ID tokens presented as bearer access tokens', () => {
  let upstream: RecordingUpstream
  const started: Setup[] = []

  before(async () => {
    upstream = await startRecordingUpstream()
  })

  after(async () => {
    for (const s of started) {
      await s.gateway.close()
      await s.idp.close()
    }
    await upstream?.close()
  })

  test('default config: the leaked ID token gets 401 invalid_token and never reaches the upstream; the access token passes', async () => {
    const s = await setup(upstream, undefined)
    started.push(s)
    const { accessToken, idToken } = await tokens(s)
    assert.equal(decodeJwt(idToken).aud, s.idp.clientId, 'an ID token: its audience is the client id')
    const count = upstream.requests.length
    const r = await fetch(`${s.base}/api/data`, { headers: { authorization: `Bearer ${idToken}` } })
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate')!, /error="invalid_token"/)
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    const refused = s.lines.find((l) => l.obj['code'] === 'invalid_token')
    assert.match(String(refused?.obj['reason']), /^id_token_as_access_token/)
    assert.ok(!JSON.stringify(s.lines).includes(idToken), 'the token is not logged')

    // The provider's real access token (RFC 9068 `typ: at+jwt`, aud = the client id here) still passes.
    assert.equal(decodeProtectedHeader(accessToken).typ, 'at+jwt')
    const ok = await fetch(`${s.base}/api/data`, { headers: { authorization: `Bearer ${accessToken}` } })
    assert.equal(ok.status, 200)
    assert.equal(upstream.requests.at(-1)!.url, '/api/data')
  })

  test('audiences set to the API: its access tokens pass, the ID token is refused, also with access_token_typ strict', async () => {
    const s = await setup(upstream, API, { audiences: [API], access_token_typ: 'strict' })
    started.push(s)
    const { accessToken, idToken } = await tokens(s)
    assert.equal(decodeJwt(accessToken).aud, API)
    const count = upstream.requests.length
    const r = await fetch(`${s.base}/api/data`, { headers: { authorization: `Bearer ${idToken}` } })
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate')!, /error="invalid_token"/)
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    const ok = await fetch(`${s.base}/api/strict`, { headers: { authorization: `Bearer ${accessToken}` } })
    assert.equal(ok.status, 200)
    assert.equal(upstream.requests.at(-1)!.url, '/api/strict')
  })

  test('audiences listing the client id explicitly: the ID token is still refused (it carries nonce)', async () => {
    const s = await setup(upstream, undefined, { audiences: ['gatehouse-test'] })
    started.push(s)
    const { accessToken, idToken } = await tokens(s)
    const count = upstream.requests.length
    const r = await fetch(`${s.base}/api/data`, { headers: { authorization: `Bearer ${idToken}` } })
    assert.equal(r.status, 401)
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    const ok = await fetch(`${s.base}/api/data`, { headers: { authorization: `Bearer ${accessToken}` } })
    assert.equal(ok.status, 200)
  })
})
