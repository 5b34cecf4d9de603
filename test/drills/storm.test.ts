/**
 * Storm drill (seed 003), short and bounded, loopback only: many concurrent clients hammer the gateway
 * with bad bearer tokens while a few good clients make ordinary authenticated requests. Asserts the good
 * clients' success, how often the identity provider was called, that memory stays bounded, and that
 * shedding under overload keeps credential holders served.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { generateKeyPair, SignJWT } from 'jose'
import { Agent, request } from 'undici'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { sessionCookie } from '../helpers/session.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SECRET = 'storm-drill-session-secret-0123456789abcdef'
const STORM_CLIENTS = 32
const STORM_REQUESTS = 4_000
const GOOD_REQUESTS = 200

describe('retry storm drill', () => {
  let idp: TestIdP
  let proxy: FaultProxy
  let upstream: RecordingUpstream
  let gateway: Gateway
  let overloaded = false
  let goodCookie: string
  const badTokens: string[] = []
  const agent = new Agent({ connections: STORM_CLIENTS + 4 })

  before(async () => {
    const proxyPort = await freePort()
    idp = await startTestIdP({
      redirectUris: ['http://127.0.0.1:1/oauth2/callback'],
      issuerOrigin: `http://127.0.0.1:${proxyPort}`,
    })
    proxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: proxyPort })
    upstream = await startRecordingUpstream()
    gateway = await startGateway(
      validateConfig({
        public_url: 'http://127.0.0.1:1',
        upstream: upstream.url,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-storm-')),
        listen: { host: '127.0.0.1', port: 0 },
        provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'CS' } },
        session: { secrets: [{ env: 'SS' }] },
        lifetimes: DEV_LIFETIMES,
        // Every client here shares 127.0.0.1, so the per-address limit is off; the others stay on. The
        // repeat penalty's cap is small so the drill stays short; its doubling still starts at 50 ms.
        rate_limits: { client: false, repeat_penalty: { after: 5, max_delay_ms: 60 } },
      }),
      {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        env: { CS: idp.clientSecret, SS: SECRET },
        isOverloaded: () => overloaded,
      },
    )
    await gateway.providerCache.refreshNow()
    goodCookie = await sessionCookie(SECRET, { sid: 'good-client' })
    // Expired tokens in the provider's shape, naming the provider's real key, but signed by another:
    // each costs a real signature check the first time it is seen.
    const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as {
      keys: Array<{ kid: string; alg?: string }>
    }
    const kid = jwks.keys.find((k) => k.alg === 'RS256' || k.kid)!.kid
    const { privateKey } = await generateKeyPair('RS256')
    const now = Math.floor(Date.now() / 1000)
    for (let i = 0; i < 200; i++) {
      badTokens.push(
        await new SignJWT({ sub: `old-client-${i}` })
          .setProtectedHeader({ alg: 'RS256', kid })
          .setIssuer(idp.issuer)
          .setAudience(idp.clientId)
          .setIssuedAt(now - 7200)
          .setExpirationTime(now - 3600)
          .sign(privateKey),
      )
    }
  })

  after(async () => {
    await agent.close()
    await gateway?.close()
    await upstream?.close()
    await proxy?.close()
    await idp?.close()
  })

  async function get(path: string, headers: Record<string, string>) {
    const r = await request(`${gateway.url}${path}`, { headers, dispatcher: agent })
    await r.body.dump()
    return r.statusCode
  }

  test('good clients keep being served while old clients retry bad tokens as fast as they can', async () => {
    const providerCalls = proxy.count()
    const upstreamBefore = upstream.requests.length
    const heapBefore = process.memoryUsage().heapUsed
    let sent = 0
    const stormStatuses = new Map<number, number>()
    const storm = Array.from({ length: STORM_CLIENTS }, async (_, c) => {
      while (sent < STORM_REQUESTS) {
        sent++
        const token = badTokens[(sent * 7 + c) % badTokens.length]!
        const status = await get('/api/sync', {
          authorization: `Bearer ${token}`,
          'user-agent': 'OldDesktop/1.2.3',
        })
        stormStatuses.set(status, (stormStatuses.get(status) ?? 0) + 1)
      }
    })
    let goodOk = 0
    const good = (async () => {
      for (let i = 0; i < GOOD_REQUESTS; i++) {
        if ((await get(`/good/${i}`, { cookie: goodCookie })) === 200) goodOk++
      }
    })()
    await Promise.all([...storm, good])

    assert.equal(goodOk, GOOD_REQUESTS, `good clients: ${goodOk}/${GOOD_REQUESTS}`)
    assert.deepEqual([...stormStatuses.keys()], [401], 'every bad token gets a precise 401')
    assert.equal(
      upstream.requests.length - upstreamBefore,
      GOOD_REQUESTS,
      'no storm request reached the upstream',
    )
    assert.ok(
      proxy.count() - providerCalls <= 1,
      `calls to the provider during the storm: ${proxy.count() - providerCalls}`,
    )
    const growthMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6
    assert.ok(growthMb < 100, `heap grew by ${growthMb.toFixed(1)} MB`)
    // Each token came back ~20 times: past the fifth repeat its answers were held, not sped through.
    const held = (await gateway.metrics.heldResponses.get()).values[0]?.value ?? 0
    assert.ok(held > STORM_REQUESTS / 2, `answers held: ${held} of ${STORM_REQUESTS}`)
  })

  test('a held answer is still the precise 401, and a client that gives up on it costs nothing', async () => {
    const token = badTokens[3]!
    for (let i = 0; i < 8; i++) await get('/api/sync', { authorization: `Bearer ${token}` })
    const heldCount = async () => (await gateway.metrics.heldResponses.get()).values[0]?.value ?? 0
    const heldBefore = await heldCount()
    const r = await request(`${gateway.url}/api/sync`, {
      headers: { authorization: `Bearer ${token}` },
      dispatcher: agent,
    })
    assert.equal(r.statusCode, 401)
    assert.match(String(r.headers['www-authenticate']), /^Bearer realm="gatehouse", error="invalid_token"/)
    assert.equal(((await r.body.json()) as { error: string }).error, 'invalid_token', 'signed by a stranger')
    assert.equal(await heldCount(), heldBefore + 1, 'this answer was held')
    // Give up while held: the gateway drops the timer and keeps answering everyone else.
    const controller = new AbortController()
    const abandoned = request(`${gateway.url}/api/sync`, {
      headers: { authorization: `Bearer ${token}` },
      signal: controller.signal,
    })
    setImmediate(() => controller.abort())
    await assert.rejects(abandoned)
    assert.equal(await get('/good/after-abandon', { cookie: goodCookie }), 200)
  })

  test('under overload, unauthenticated and already-refused requests are shed first; sessions are served', async () => {
    // Make sure the storm tokens are known bad, then declare overload.
    for (const t of badTokens.slice(0, 5)) await get('/api/sync', { authorization: `Bearer ${t}` })
    overloaded = true
    try {
      assert.equal(await get('/anything', {}), 503, 'no credential: shed')
      assert.equal(
        await get('/api/sync', { authorization: `Bearer ${badTokens[0]}` }),
        503,
        'refused a moment ago: shed',
      )
      const before = upstream.requests.length
      assert.equal(await get('/good/under-load', { cookie: goodCookie }), 200, 'a valid session is served')
      assert.equal(upstream.requests.length, before + 1)
    } finally {
      overloaded = false
    }
    assert.equal(await get('/anything', {}), 401, 'back to normal answers')
  })
})

describe('shedding on requests in flight', () => {
  let idp: TestIdP
  let gateway: Gateway
  let goodCookie: string
  const held: Array<() => void> = []
  let upstreamServer: Server
  let upstreamHits = 0

  before(async () => {
    idp = await startTestIdP({ redirectUris: ['http://127.0.0.1:1/oauth2/callback'] })
    // An upstream that holds /slow until released: a slow app keeps requests in flight while the
    // event loop stays idle, which the event-loop signal alone would never notice.
    upstreamServer = createServer((req, res) => {
      upstreamHits++
      const answer = () => res.end('ok')
      if (req.url?.startsWith('/slow')) held.push(answer)
      else answer()
    })
    await new Promise<void>((r) => upstreamServer.listen(0, '127.0.0.1', r))
    const port = (upstreamServer.address() as AddressInfo).port
    gateway = await startGateway(
      validateConfig({
        public_url: 'http://127.0.0.1:1',
        upstream: `http://127.0.0.1:${port}`,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-inflight-')),
        listen: { host: '127.0.0.1', port: 0 },
        provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'CS' } },
        session: { secrets: [{ env: 'SS' }] },
        lifetimes: DEV_LIFETIMES,
        shedding: { max_event_loop_delay_ms: 10_000, max_in_flight: 2 },
      }),
      { baseDir: process.cwd(), log: silentLogger, admin: false, env: { CS: idp.clientSecret, SS: SECRET } },
    )
    goodCookie = await sessionCookie(SECRET, { sid: 'inflight', refreshToken: undefined })
  })

  after(async () => {
    for (const release of held.splice(0)) release()
    await gateway?.close()
    await new Promise((r) => upstreamServer?.close(r))
    await idp?.close()
  })

  test('past max_in_flight, requests without a credential get 503 at once; sessions are still served', async () => {
    const agent = new Agent({ connections: 8 })
    try {
      const slow = [1, 2, 3].map((i) =>
        request(`${gateway.url}/slow/${i}`, { headers: { cookie: goodCookie }, dispatcher: agent }),
      )
      // Wait until the three slow requests reached the upstream (and so are in flight at the gateway).
      for (let i = 0; i < 200 && held.length < 3; i++) await new Promise((r) => setTimeout(r, 5))
      assert.equal(held.length, 3)
      const hitsBefore = upstreamHits
      const shed = await request(`${gateway.url}/anything`, { dispatcher: agent })
      assert.equal(shed.statusCode, 503)
      assert.equal(shed.headers['retry-after'], '2')
      assert.equal(((await shed.body.json()) as { error: string }).error, 'overloaded')
      const served = await request(`${gateway.url}/fast`, {
        headers: { cookie: goodCookie },
        dispatcher: agent,
      })
      assert.equal(served.statusCode, 200)
      await served.body.dump()
      assert.equal(upstreamHits, hitsBefore + 1, 'only the session request reached the upstream')
      for (const release of held.splice(0)) release()
      for (const r of await Promise.all(slow)) {
        assert.equal(r.statusCode, 200)
        await r.body.dump()
      }
      // In-flight count back under the bound: normal answers again.
      const normal = await request(`${gateway.url}/anything`, { dispatcher: agent })
      assert.equal(normal.statusCode, 401)
      await normal.body.dump()
    } finally {
      await agent.close()
    }
  })

  test('answers held for a repeated bad cookie are not counted in flight, so they cannot shed others', async () => {
    const agent = new Agent({ connections: 16 })
    const junk = { cookie: 'gatehouse=junk.junk.junk.junk.junk', accept: 'application/json' }
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const r = await request(`${gateway.url}${path}`, { headers, dispatcher: agent })
      await r.body.dump()
      return r.statusCode
    }
    try {
      // Past its fifth repeat, each answer to the same refused cookie is held (50 ms, 100 ms, …).
      for (let i = 0; i < 6; i++) assert.equal(await get('/api', junk), 401)
      const heldBefore = (await gateway.metrics.heldResponses.get()).values[0]?.value ?? 0
      const heldNow = Array.from({ length: 6 }, () => get('/api', junk))
      // While six are held (max_in_flight is 2), a request without a credential is answered, not shed.
      for (let i = 0; i < 200; i++) {
        if (((await gateway.metrics.heldResponses.get()).values[0]?.value ?? 0) >= heldBefore + 6) break
        await new Promise((r) => setTimeout(r, 5))
      }
      assert.equal(await get('/anything'), 401)
      assert.deepEqual(await Promise.all(heldNow), [401, 401, 401, 401, 401, 401])
    } finally {
      await agent.close()
    }
  })
})
