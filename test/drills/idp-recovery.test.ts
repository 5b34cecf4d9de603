/**
 * Recovery drills (Gatehouse 8, item 8): a gateway that starts while the provider answers 504 must let
 * people sign in again soon after the provider is back, without a restart, whether it started from a
 * persisted copy of discovery and JWKS or from none. A fault-injecting proxy stands in front of a real
 * oidc-provider; time is a frozen clock that the drill moves.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import type { Config } from '../../src/config/schema.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signInAt, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const env = { CS: '', SS: 'recovery-drill-session-secret-0123456789abc' }
const PROVIDER_PATHS = ['/_idp/jwks', '/_idp/token', '/_idp/.well-known/openid-configuration']

describe('recovery after a provider outage', () => {
  let idp: TestIdP
  let proxy: FaultProxy
  let upstream: RecordingUpstream
  let port: number
  const clock = createFrozenClock(Date.now())
  const gateways: Gateway[] = []

  const outage = () => {
    for (const path of PROVIDER_PATHS)
      proxy.set(path, { kind: 'status', status: 504, body: '<html>504 Gateway Timeout</html>' })
  }

  function configFor(dataDir: string): Config {
    return validateConfig({
      public_url: `http://127.0.0.1:${port}`,
      upstream: upstream.url,
      data_dir: dataDir,
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
      shutdown: { drain: '1s' },
    })
  }

  async function start(config: Config): Promise<Gateway> {
    const g = await startGateway(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      admin: false,
      env,
    })
    gateways.push(g)
    return g
  }

  async function stop(g: Gateway) {
    await g.close()
    gateways.splice(gateways.indexOf(g), 1)
  }

  /** A cold start during the outage: its first refresh fails, strangers get the 503 page. */
  async function coldStartDuringOutage(dataDir: string): Promise<Gateway> {
    outage()
    const g = await start(configFor(dataDir))
    await g.providerCache.refreshNow().catch(() => {})
    assert.equal(g.providerCache.status().stale, true)
    const count = upstream.requests.length
    const stranger = await browserFetch(`${g.url}/during`, { headers: { accept: 'text/html' } })
    assert.equal(stranger.status, 503, 'the provider is down: the clear 503 page')
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    return g
  }

  /** Heals the provider and signs a new browser in within `withinMs` of clock time. */
  async function signInAfterHealing(g: Gateway, withinMs: number) {
    proxy.clear()
    // The breaker opened on the failures above; it lets a trial call through after open_for (30 s).
    clock.advance(withinMs)
    const { done } = await signInAt(`${g.url}/back`, idp.issuer)
    assert.equal(done.response.status, 200)
    const seen = upstream.requests.at(-1)!
    assert.equal(seen.url, '/back')
    assert.equal(seen.headers['x-auth-request-email'], DEMO_USER.email)
    assert.equal(g.providerCache.status().stale, false, 'the copies are fresh again')
  }

  before(async () => {
    const proxyPort = await freePort()
    port = await freePort()
    idp = await startTestIdP({
      redirectUris: [`http://127.0.0.1:${port}/oauth2/callback`],
      issuerOrigin: `http://127.0.0.1:${proxyPort}`,
    })
    proxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: proxyPort })
    env.CS = idp.clientSecret
    upstream = await startRecordingUpstream()
  })

  after(async () => {
    for (const g of [...gateways]) await g.close()
    await upstream?.close()
    await proxy?.close()
    await idp?.close()
  })

  test('started from a persisted copy during the outage: sign-in works within 30 s of the provider returning', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gh-recovery-'))
    // A previous run, while the provider was up, persisted discovery and JWKS.
    proxy.clear()
    const previous = await start(configFor(dataDir))
    await previous.providerCache.refreshNow()
    await stop(previous)

    const g = await coldStartDuringOutage(dataDir)
    assert.equal(g.providerCache.status().metadata.source, 'persisted')
    await signInAfterHealing(g, 30_000)
    await stop(g)
  })

  test('started with no copy at all during the outage: sign-in works within 30 s of the provider returning', async () => {
    const g = await coldStartDuringOutage(mkdtempSync(join(tmpdir(), 'gh-recovery-')))
    assert.equal(g.providerCache.status().metadata.source, 'none')
    await signInAfterHealing(g, 30_000)
    await stop(g)
  })

  test('with nobody signing in, the copies are retried on their backoff schedule and the degraded state clears', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gh-recovery-'))
    proxy.clear()
    const previous = await start(configFor(dataDir))
    await previous.providerCache.refreshNow()
    await stop(previous)
    outage()
    const g = await start(configFor(dataDir))
    await g.providerCache.refreshNow().catch(() => {})
    assert.equal(g.providerCache.status().stale, true)
    proxy.clear()
    // Past the breaker's open_for and the copies' next retries (5 s, doubling), far short of refresh_after.
    clock.advance(30_000)
    const due = g.providerCache.nextRetryAt()
    assert.ok(due !== undefined && due <= clock.now(), 'a retry is due')
    // What the gateway's once-a-second retry tick does.
    await g.providerCache.refreshIfDue()
    for (let i = 0; i < 200 && g.providerCache.status().stale; i++)
      await new Promise((r) => setTimeout(r, 10))
    const st = g.providerCache.status()
    assert.equal(st.stale, false)
    assert.equal(st.metadata.source, 'network')
    assert.equal(st.metadata.ageSeconds, 0)
    await stop(g)
  })
})
