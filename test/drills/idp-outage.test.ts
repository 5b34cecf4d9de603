/**
 * Outage drills (seed 000): a fault-injecting proxy stands in front of a real oidc-provider, and the
 * provider's discovery, JWKS and token endpoints fail while the clock jumps ahead. Each drill asserts
 * what the upstream saw, not only status codes.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { generateKeyPair, SignJWT } from 'jose'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import type { Config } from '../../src/config/schema.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signInAt, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const HOUR = 3_600_000
const env = { CS: '', SS: 'drill-session-secret-0123456789abcdefghijkl' }
const JWKS = '/_idp/jwks'
const TOKEN = '/_idp/token'
const DISCOVERY = '/_idp/.well-known/openid-configuration'

describe('identity provider outage drills', () => {
  let idp: TestIdP
  let proxy: FaultProxy
  let upstream: RecordingUpstream
  let gateway: Gateway
  let config: Config
  let base: string
  let session: ReturnType<typeof createCookieClient>
  let providerToken: string
  let apiToken: string
  const clock = createFrozenClock(Date.now())

  const outage = () => {
    for (const path of [JWKS, TOKEN, DISCOVERY])
      proxy.set(path, { kind: 'status', status: 504, body: '<html>504 Gateway Timeout</html>' })
  }

  before(async () => {
    const proxyPort = await freePort()
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({
      redirectUris: [`${base}/oauth2/callback`],
      issuerOrigin: `http://127.0.0.1:${proxyPort}`,
      // Longer than the drill's simulated hour, so sessions need no refresh (session grace is not built yet).
      accessTokenTtlSeconds: 4 * 3600,
    })
    proxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: proxyPort })
    env.CS = idp.clientSecret
    upstream = await startRecordingUpstream()
    config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-drill-')),
      listen: { host: '127.0.0.1', port },
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CS' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
        timeout: 2,
      },
      session: { secrets: [{ env: 'SS' }] },
      lifetimes: DEV_LIFETIMES,
      identity: { pass_access_token: true },
      shutdown: { drain: '1s' },
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: false,
      env,
    })
    await gateway.providerCache.refreshNow()

    const signedIn = await signInAt(`${base}/`, idp.issuer)
    session = signedIn.browser
    const done = signedIn.done
    assert.equal(done.response.status, 200)
    providerToken = String(upstream.requests.at(-1)!.headers['x-auth-request-access-token'])
    apiToken = (await gateway.services.tokens.issue({ subject: 'drill-bot' })).token
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await proxy?.close()
    await idp?.close()
  })

  test('Drill A (seed 000 replayed): JWKS, token and discovery answer 504 for an hour; every valid credential still passes', async () => {
    outage()
    const jwksBefore = proxy.count(JWKS)
    for (let minute = 0; minute <= 60; minute += 15) {
      clock.set(clock.now() + 15 * 60_000)
      await gateway.providerCache.refreshIfDue().catch(() => {})
      const bySession = await session.request(`${base}/with-session`)
      assert.equal(bySession.status, 200, `session at +${minute} min`)
      assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-email'], DEMO_USER.email)
      const byProvider = await fetch(`${base}/with-provider-token`, {
        headers: { authorization: `Bearer ${providerToken}` },
      })
      assert.equal(byProvider.status, 200, `provider access token at +${minute} min`)
      assert.equal(upstream.requests.at(-1)!.url, '/with-provider-token')
      const byApiToken = await fetch(`${base}/with-api-token`, {
        headers: { authorization: `Bearer ${apiToken}` },
      })
      assert.equal(byApiToken.status, 200, `API token at +${minute} min`)
      assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-user'], 'drill-bot')
    }
    const st = gateway.providerCache.status()
    assert.equal(st.stale, true, 'the cache knows it is serving an old copy')
    // The provider's 504, or the breaker it opened.
    assert.match(st.lastError ?? '', /504|circuit open/)
    // Backoff: a handful of refresh attempts over the hour, not one per request.
    assert.ok(proxy.count(JWKS) - jwksBefore <= 6, `JWKS attempts: ${proxy.count(JWKS) - jwksBefore}`)
  })

  test('Drill B: a gateway started during the outage verifies at once from the persisted copy', async () => {
    outage()
    const cold = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: false,
      env,
      listen: { host: '127.0.0.1', port: 0 },
    })
    try {
      await cold.providerCache.refreshNow().catch(() => {})
      assert.equal(cold.providerCache.status().jwks.source, 'persisted')
      const r = await fetch(`${cold.url}/cold`, { headers: { authorization: `Bearer ${providerToken}` } })
      assert.equal(r.status, 200)
      assert.equal(upstream.requests.at(-1)!.url, '/cold')
      // A stranger gets the clear 503 page, not a redirect to the dead provider.
      const count = upstream.requests.length
      const stranger = await browserFetch(`${cold.url}/`, { headers: { accept: 'text/html' } })
      assert.equal(stranger.status, 503)
      assert.ok(stranger.headers.get('retry-after'))
      assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    } finally {
      await cold.close()
    }
  })

  test('Drill D: a token naming a key the provider rotated in during the outage: 401, and fetches respect the cooldown', async () => {
    outage()
    clock.advance(HOUR) // past any earlier unknown-kid fetch
    const { privateKey } = await generateKeyPair('RS256')
    const now = Math.floor(clock.now() / 1000)
    const before = proxy.count(JWKS)
    const count = upstream.requests.length
    for (let i = 0; i < 20; i++) {
      const forged = await new SignJWT({ sub: 'x' })
        .setProtectedHeader({ alg: 'RS256', kid: `rotated-${i}` })
        .setIssuer(idp.issuer)
        .setAudience(idp.clientId)
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .sign(privateKey)
      const r = await fetch(`${base}/unknown-kid`, { headers: { authorization: `Bearer ${forged}` } })
      assert.equal(r.status, 401)
      assert.match(r.headers.get('www-authenticate')!, /error="invalid_token"/)
    }
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    assert.ok(
      proxy.count(JWKS) - before <= 1,
      `JWKS fetches for 20 unknown kids: ${proxy.count(JWKS) - before}`,
    )
  })

  test('Drill E: when the provider returns, copies and sign-ins recover without a restart', async () => {
    proxy.clear()
    clock.advance(HOUR) // past the backoff
    await gateway.providerCache.refreshNow()
    const st = gateway.providerCache.status()
    assert.equal(st.stale, false)
    assert.equal(st.jwks.ageSeconds, 0)
    const browser = createCookieClient({ fetch: browserFetch })
    const r = await browser.request(`${base}/again`, { headers: { accept: 'text/html' } })
    assert.equal(r.status, 302)
    assert.ok(r.headers.get('location')!.startsWith(idp.issuer))
    const bySession = await session.request(`${base}/after-recovery`)
    assert.equal(bySession.status, 200)
  })

  test('Drill C: a session whose refresh falls in the outage lives on for outage_grace, marked degraded, then ends cleanly', async () => {
    proxy.clear()
    const { browser, done } = await signInAt(`${base}/c`, idp.issuer)
    assert.equal(done.response.status, 200)
    outage()
    // The access token (4 h) expired 10 minutes ago and cannot be refreshed: inside the 1 h grace.
    clock.advance(4 * HOUR + 10 * 60_000)
    const tokenCalls = proxy.count(TOKEN)
    for (let i = 0; i < 30; i++) {
      const r = await browser.request(`${base}/in-grace`)
      assert.equal(r.status, 200)
    }
    const seen = upstream.requests.at(-1)!
    assert.equal(seen.url, '/in-grace')
    assert.equal(seen.headers['x-gatehouse-degraded'], 'idp-unavailable')
    assert.equal(seen.headers['x-auth-request-email'], DEMO_USER.email)
    assert.ok(proxy.count(TOKEN) - tokenCalls <= 1, `refresh attempts: ${proxy.count(TOKEN) - tokenCalls}`)
    // Past the grace: the session ends cleanly, cookie cleared, a clear answer and no redirect loop.
    clock.advance(HOUR)
    const count = upstream.requests.length
    const api = await browser.request(`${base}/after-grace`, { headers: { accept: 'application/json' } })
    assert.equal(api.status, 401)
    assert.equal((await api.json()).error, 'session_expired')
    assert.ok(api.headers.getSetCookie().some((c) => /^gatehouse=;.*Max-Age=0/.test(c)))
    const page = await browser.request(`${base}/after-grace`, { headers: { accept: 'text/html' } })
    assert.equal(page.status, 503, 'the provider is still down: the sign-in page says so')
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
  })

  test('status.json on the admin port shows the provider state, copies and breaker', async () => {
    outage()
    const admin = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: { host: '127.0.0.1', port: 0 },
      env,
      listen: { host: '127.0.0.1', port: 0 },
    })
    try {
      await admin.providerCache.refreshNow().catch(() => {})
      const st = (await (await fetch(`${admin.adminUrl}/status.json`)).json()) as {
        provider: {
          state: string
          breaker: { state: string; consecutiveFailures: number }
          jwks: { source: string }
        }
      }
      assert.equal(st.provider.state, 'degraded')
      assert.equal(st.provider.jwks.source, 'persisted')
      assert.ok(st.provider.breaker.consecutiveFailures >= 1)
      const metrics = await (await fetch(`${admin.adminUrl}/metrics`)).text()
      assert.match(metrics, /gatehouse_provider_copy_age_seconds\{provider="default",what="jwks"\} \d+/)
      assert.match(metrics, /gatehouse_provider_breaker_open\{provider="default"\} [01]/)
      const ready = await fetch(`${admin.adminUrl}/readyz`)
      assert.equal(ready.status, 200)
      assert.match(JSON.stringify(await ready.json()), /degraded/)
    } finally {
      await admin.close()
    }
  })

  test('every kind of failure (504, timeout, slow, reset, refused, garbage JSON) is an outage, never a reason to drop the keys', async () => {
    const faults: Array<[string, () => Promise<void> | void]> = [
      ['504', () => outage()],
      ['timeout', () => proxy.set(JWKS, { kind: 'hang' })],
      ['slow', () => proxy.set(JWKS, { kind: 'slow', delayMs: 2_500 })],
      ['reset', () => proxy.set(JWKS, { kind: 'reset' })],
      ['garbage JSON', () => proxy.set(JWKS, { kind: 'garbage' })],
      ['refused', () => proxy.stop()],
    ]
    // Back to the provider's own time (its tokens carry real timestamps; the earlier drills moved our
    // clock hours ahead), fresh copies, and a fresh provider access token.
    clock.set(Date.now())
    proxy.clear()
    await gateway.providerCache.refreshNow()
    await signInAt(`${base}/fresh`, idp.issuer)
    const token = String(upstream.requests.at(-1)!.headers['x-auth-request-access-token'])
    for (const [name, inject] of faults) {
      proxy.clear()
      await proxy.restart()
      clock.advance(11 * 60_000) // past refresh_after (10 min), which also bounds the backoff
      await inject()
      await gateway.providerCache.refreshIfDue().catch(() => {})
      // The refresh runs in the background: wait for its outcome (bounded by the 2 s provider timeout).
      for (let i = 0; i < 400 && !gateway.providerCache.status().stale; i++)
        await new Promise((r) => setTimeout(r, 10))
      assert.equal(gateway.providerCache.status().stale, true, `${name}: the failed refresh is noticed`)
      const r = await fetch(`${base}/fault-${name}`, {
        headers: { authorization: `Bearer ${token}` },
      })
      assert.equal(r.status, 200, `${name}: the provider token still verifies from the last good copy`)
    }
    proxy.clear()
    await proxy.restart()
  })

  test('a JWKS that no longer lists the key is the provider speaking: its tokens are refused after the refresh', async () => {
    clock.set(Date.now())
    proxy.clear()
    await gateway.providerCache.refreshNow()
    await signInAt(`${base}/fresh2`, idp.issuer)
    const token = String(upstream.requests.at(-1)!.headers['x-auth-request-access-token'])
    assert.equal(
      (await fetch(`${base}/key-listed`, { headers: { authorization: `Bearer ${token}` } })).status,
      200,
    )
    const kid = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).kid as string
    proxy.set(JWKS, {
      kind: 'rewrite',
      transform: (body) =>
        JSON.stringify({
          keys: (JSON.parse(body) as { keys: Array<{ kid?: string }> }).keys.filter((k) => k.kid !== kid),
        }),
    })
    await gateway.providerCache.refreshNow()
    // The verified-token cache still remembers this exact token; a refusal needs the keys, so compare a
    // gateway that starts now, from the refreshed (persisted) copy.
    const cold = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: false,
      env,
      listen: { host: '127.0.0.1', port: 0 },
    })
    try {
      const r = await fetch(`${cold.url}/removed-key`, { headers: { authorization: `Bearer ${token}` } })
      assert.equal(r.status, 401)
    } finally {
      await cold.close()
    }
    proxy.clear()
    clock.advance(HOUR)
    await gateway.providerCache.refreshNow()
  })
})
