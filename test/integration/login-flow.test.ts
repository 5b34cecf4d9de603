/**
 * The whole code flow against a real oidc-provider (the embedded one) on a random loopback port:
 * a scripted browser signs in through the provider's form, the upstream sees the identity, the
 * session refreshes after a clock jump, bearer tokens work, sign-out ends everything.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import {
  DEMO_USER,
  formAction,
  hiddenInputs,
  signIn,
  signInAt,
  startTestIdP,
  type TestIdP,
} from '../helpers/test-idp.ts'

const SESSION_SECRET = 'integration-session-secret-0123456789abcdef'

describe('login flow against a real OpenID provider', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let base: string
  const clock = createFrozenClock(Date.now())

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({
      redirectUris: [`${base}/oauth2/callback`],
      postLogoutRedirectUris: [`${base}/`],
      accessTokenTtlSeconds: 3600,
    })
    upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-flow-')),
      listen: { host: '127.0.0.1', port },
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'GH_CLIENT_SECRET' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'GH_SESSION_SECRET' }], refresh_before: '10m' },
      lifetimes: DEV_LIFETIMES,
      routes: [
        { path: '/public/*', allow: 'anonymous' },
        { path: '/admin/*', allow: { groups: ['admins'] } },
        { path: '/finance/*', allow: { groups: ['finance'] } },
      ],
      identity: { pass_access_token: true },
      shutdown: { drain: '1s' },
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: { host: '127.0.0.1', port: 0 },
      env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_SECRET: SESSION_SECRET },
    })
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  async function signedInBrowser(path = '/dashboard') {
    const browser = createCookieClient({ fetch: browserFetch })
    const first = await browser.request(`${base}${path}`, { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    const authorize = first.headers.get('location')!
    assert.ok(authorize.startsWith(idp.issuer), 'redirected straight to the provider')
    const callback = await signIn(browser, authorize, DEMO_USER.username, DEMO_USER.password, idp.issuer)
    assert.equal(callback.origin, base)
    assert.equal(callback.pathname, '/oauth2/callback')
    const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
    return { browser, done }
  }

  test('sign in through the provider form and reach the app with identity headers', async () => {
    const before = upstream.requests.length
    const { browser, done } = await signedInBrowser('/dashboard?tab=1')
    assert.equal(done.response.status, 200)
    assert.equal(done.url, `${base}/dashboard?tab=1`)
    const seen = upstream.requests.at(-1)!
    assert.equal(upstream.requests.length, before + 1, 'the upstream was reached only after sign-in')
    assert.equal(seen.url, '/dashboard?tab=1')
    const sub = idp.users.find(DEMO_USER.username)!.sub
    assert.equal(seen.headers['x-auth-request-user'], sub)
    assert.equal(seen.headers['x-auth-request-email'], DEMO_USER.email)
    assert.equal(seen.headers['x-auth-request-groups'], 'admins,staff')
    assert.equal(seen.headers['x-auth-request-preferred-username'], DEMO_USER.username)
    assert.equal(seen.headers['x-forwarded-proto'], 'http')
    assert.ok(!String(seen.headers.cookie ?? '').includes('gatehouse'), 'session cookie not forwarded')
    // Security headers on the proxied response, the app's own cookie kept.
    const again = await browser.request(`${base}/dashboard`, { headers: { accept: 'text/html' } })
    assert.equal(again.status, 200)
    assert.equal(again.headers.get('x-content-type-options'), 'nosniff')
    assert.equal(again.headers.get('x-frame-options'), 'SAMEORIGIN')
    assert.match(again.headers.get('content-security-policy')!, /frame-ancestors 'self'/)
    assert.equal(again.headers.get('strict-transport-security'), null, 'no HSTS over http')
    assert.match(again.headers.get('set-cookie') ?? '', /app=1/)
  })

  test('spoofed identity headers from the client never reach the app', async () => {
    const { browser } = await signedInBrowser()
    await browser.request(`${base}/x`, {
      headers: {
        'x-auth-request-user': 'root',
        'x-auth-request-groups': 'admins,root',
        'x-forwarded-for': '1.2.3.4',
      },
    })
    const seen = upstream.requests.at(-1)!
    assert.notEqual(seen.headers['x-auth-request-user'], 'root')
    assert.equal(seen.headers['x-auth-request-groups'], 'admins,staff')
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1')
    // Anonymous routes strip them too.
    const anon = await fetch(`${base}/public/a`, { headers: { 'x-auth-request-user': 'root' } })
    assert.equal(anon.status, 200)
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-user'], undefined)
  })

  test('group policy: 403 for a group the user lacks, without reaching the app', async () => {
    const { browser } = await signedInBrowser()
    const count = upstream.requests.length
    const r = await browser.request(`${base}/finance/report`, { headers: { accept: 'application/json' } })
    assert.equal(r.status, 403)
    assert.equal((await r.json()).error, 'forbidden')
    assert.equal(upstream.requests.length, count)
    const ok = await browser.request(`${base}/admin/panel`)
    assert.equal(ok.status, 200)
  })

  test('an ID token with another nonce is refused (400 id_token_invalid), no session is set', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const first = await browser.request(`${base}/nonce`, { headers: { accept: 'text/html' } })
    // Same state and PKCE challenge, but the provider is asked for another nonce.
    const authorize = new URL(first.headers.get('location')!)
    authorize.searchParams.set('nonce', 'not-the-nonce-gatehouse-chose')
    const callback = await signIn(browser, authorize, DEMO_USER.username, DEMO_USER.password, idp.issuer)
    const r = await browser.request(callback, { headers: { accept: 'application/json' } })
    assert.equal(r.status, 400)
    assert.equal((await r.json()).error, 'id_token_invalid')
    assert.ok(!r.headers.getSetCookie().some((c) => c.startsWith('gatehouse=') && !c.includes('Max-Age=0')))
    const after = await browser.request(`${base}/api/x`)
    assert.equal(after.status, 401, 'still signed out')
  })

  test('an error returned by the provider to the callback: 400 provider_error, no session', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const first = await browser.request(`${base}/`, { headers: { accept: 'text/html' } })
    const authorize = new URL(first.headers.get('location')!)
    // prompt=none without a provider session: the provider answers login_required to the callback.
    authorize.searchParams.set('prompt', 'none')
    const hop = await browser.request(authorize)
    const callback = new URL(hop.headers.get('location')!, authorize)
    assert.equal(callback.searchParams.get('error'), 'login_required')
    const r = await browser.request(callback, { headers: { accept: 'text/html' } })
    assert.equal(r.status, 400)
    assert.match(await r.text(), /did not sign you in \(login_required\)/)
    assert.equal((await browser.request(`${base}/api/x`)).status, 401)
  })

  test('an API call without credentials gets 401 and the app is not reached', async () => {
    const count = upstream.requests.length
    const r = await fetch(`${base}/api/items`, { headers: { accept: 'application/json' } })
    assert.equal(r.status, 401)
    assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="gatehouse"')
    assert.equal((await r.json()).error, 'missing_credentials')
    assert.equal(upstream.requests.length, count)
  })

  test("the provider's access token works as a bearer token; a tampered one gets 401 invalid_token", async () => {
    const { browser } = await signedInBrowser()
    await browser.request(`${base}/x`)
    const token = String(upstream.requests.at(-1)!.headers['x-auth-request-access-token'])
    assert.equal(token.split('.').length, 3, 'a JWT access token')
    const r = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(r.status, 200)
    // Access tokens carry the subject (and whatever claims the provider puts in them).
    assert.equal(
      upstream.requests.at(-1)!.headers['x-auth-request-user'],
      idp.users.find(DEMO_USER.username)!.sub,
    )
    const count = upstream.requests.length
    const bad = await fetch(`${base}/api/me`, {
      headers: { authorization: `Bearer ${token.slice(0, -4)}AAAA` },
    })
    assert.equal(bad.status, 401)
    assert.match(bad.headers.get('www-authenticate')!, /error="invalid_token"/)
    const malformed = await fetch(`${base}/api/me`, { headers: { authorization: 'Basic abc' } })
    assert.equal(malformed.status, 401)
    assert.equal(upstream.requests.length, count)
  })

  test('refresh after a clock jump: new tokens, one call, same session', async () => {
    const { browser } = await signedInBrowser()
    await browser.request(`${base}/x`)
    const firstToken = upstream.requests.at(-1)!.headers['x-auth-request-access-token']
    clock.advance((3600 - 300) * 1000)
    const responses = await Promise.all([1, 2, 3, 4, 5].map(() => browser.request(`${base}/x`)))
    for (const r of responses) assert.equal(r.status, 200)
    const tokens = new Set(upstream.requests.slice(-5).map((q) => q.headers['x-auth-request-access-token']))
    assert.equal(tokens.size, 1, 'one refresh served all five requests')
    assert.ok(!tokens.has(firstToken), 'a new access token')
    // Later requests use the new cookie without refreshing again.
    await browser.request(`${base}/x`)
    assert.ok(tokens.has(upstream.requests.at(-1)!.headers['x-auth-request-access-token']))
  })

  test('sign-out clears the session and passes through the provider logout', async () => {
    const { browser } = await signedInBrowser()
    const out = await browser.request(`${base}/oauth2/sign_out`, { headers: { accept: 'text/html' } })
    assert.equal(out.status, 302)
    const cleared = out.headers.getSetCookie().find((c) => c.startsWith('gatehouse='))
    assert.match(cleared!, /^gatehouse=; Path=\/; HttpOnly; SameSite=Lax; Max-Age=0$/)
    const logout = new URL(out.headers.get('location')!)
    assert.ok(logout.href.startsWith(idp.issuer), 'to the provider end_session endpoint')
    // No ID token in the URL: oidc-provider accepts client_id (RP-Initiated Logout 1.0 §2) instead.
    assert.equal(logout.searchParams.get('id_token_hint'), null)
    assert.equal(logout.searchParams.get('client_id'), idp.clientId)
    assert.ok(logout.searchParams.get('logout_hint'))
    // Confirm at the provider, as a person would.
    const page = await browser.request(logout)
    const html = await page.text()
    const action = formAction(html)!
    const back = await browser.postForm(new URL(action, logout), { ...hiddenInputs(html), logout: 'yes' })
    const done = await browser.follow(new URL(back.headers.get('location')!, logout), {
      headers: { accept: 'text/html' },
    })
    // Back at the app: signed out, so the provider asks for the password again.
    assert.ok(done.url.startsWith(idp.issuer), `ended at ${done.url}`)
    assert.match(await done.response.text(), /name="password"/)
    const api = await browser.request(`${base}/api/x`)
    assert.equal(api.status, 401)
  })

  test('admin port: health, readiness and metrics', async () => {
    const health = await fetch(`${gateway.adminUrl}/healthz`)
    assert.equal(health.status, 200)
    const ready = await fetch(`${gateway.adminUrl}/readyz`)
    assert.deepEqual(await ready.json(), {
      status: 'ready',
      checks: { provider: 'ok', store: 'ok', redis: 'off' },
    })
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text()
    assert.match(metrics, /gatehouse_requests_total\{decision="allow",code="allow"\} \d+/)
    assert.match(metrics, /gatehouse_decision_seconds_bucket/)
  })
})

describe('when the provider is down', () => {
  test('existing sessions keep working; new sign-ins get a clear 503 page, no redirect loop', async () => {
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    const upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-flow-')),
      listen: { host: '127.0.0.1', port },
      provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'S' }, timeout: 2 },
      session: { secrets: [{ env: 'K' }] },
      lifetimes: { ...DEV_LIFETIMES, session: { ttl: '1h', max_ttl: '1d' } },
      shutdown: { drain: '1s' },
    })
    const gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      env: { S: idp.clientSecret, K: SESSION_SECRET },
    })
    try {
      const { browser, done } = await signInAt(`${base}/`, idp.issuer)
      assert.equal(done.response.status, 200)
      await idp.close()
      const again = await browser.request(`${base}/still-here`, { headers: { accept: 'text/html' } })
      assert.equal(again.status, 200, 'the session verifies without the provider')
      assert.equal(upstream.requests.at(-1)!.url, '/still-here')
      // A stranger arriving at a gateway that starts during the outage (it has the persisted copy of the
      // provider's metadata, and its first refresh fails) gets the 503 page, not a redirect to a dead provider.
      const cold = await startGateway(config, {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        listen: { host: '127.0.0.1', port: 0 },
        env: { S: idp.clientSecret, K: SESSION_SECRET },
      })
      try {
        await cold.providerCache.refreshNow().catch(() => {})
        assert.equal(cold.providerCache.status().metadata.source, 'persisted')
        const count = upstream.requests.length
        const r = await browserFetch(`${cold.url}/`, { headers: { accept: 'text/html' } })
        assert.equal(r.status, 503)
        assert.equal(r.headers.get('retry-after'), '30')
        assert.equal(r.headers.get('location'), null)
        assert.match(await r.text(), /sign-in service is unavailable/)
        assert.equal(upstream.requests.length, count)
      } finally {
        await cold.close()
      }
    } finally {
      await gateway.close()
      await upstream.close()
    }
  })
})
