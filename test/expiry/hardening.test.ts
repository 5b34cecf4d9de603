/**
 * Security review of the expiry module, one describe per finding, all on a frozen clock:
 * 1. the alert webhook URL (a secret) is validated, and never leaks through fetch's error messages or a redirect;
 * 2. an endpoint serving two certificates in turn (rolling renewal) alerts once, not on every switch;
 * 3. hosts named only by the stored discovery document are not probed (no port-scan oracle on /status);
 * 4. cookie secrets are shown by position only; their first-seen key in the store is salted per deployment.
 */
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { ConfigError, validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { type Logger, silentLogger } from '../../src/core/ports.ts'
import { createAlerter } from '../../src/expiry/alerts.ts'
import { collectInventory } from '../../src/expiry/collect.ts'
import { clientSecretEntry, tlsEntry } from '../../src/expiry/inventory.ts'
import { createTLSObserver, type ObservedCertificate } from '../../src/expiry/tls.ts'
import { providerCacheKeys } from '../../src/keys/provider-cache.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { makeCertificate, type TestCertificate } from '../helpers/certs.ts'

const DAY = 86_400
const T0 = Date.UTC(2026, 0, 1) / 1000
const SECRET = 'hardening-test-secret-0123456789-abcdefgh'
const HOOK_SECRET = 'T0000/B0000/XXXXslackTOKENxxxx'

function capturingLogger(): Logger & { lines: string[] } {
  const lines: string[] = []
  const put = (obj: object, msg?: string) => {
    lines.push(JSON.stringify({ ...obj, msg }))
  }
  return { lines, debug: put, info: put, warn: put, error: put }
}

function baseConfig(extra: Record<string, unknown> = {}) {
  return {
    public_url: 'http://localhost:8080',
    upstream: 'http://127.0.0.1:9',
    data_dir: mkdtempSync(join(tmpdir(), 'gh-hardening-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'app', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    ...extra,
  }
}

describe('1. the alert webhook URL is a secret', () => {
  it('one from { env } that is not https (or has user:password) stops the start, naming alerts.webhook, never the value', async () => {
    const config = validateConfig(baseConfig({ alerts: { webhook: { env: 'HOOK' } } }))
    for (const url of [
      `http://hooks.example.com/services/${HOOK_SECRET}`,
      `https://user:${HOOK_SECRET}@hooks.example.com/x`,
      `ftp://hooks.example.com/${HOOK_SECRET}`,
    ]) {
      const outcome = await startGateway(config, {
        baseDir: process.cwd(),
        log: silentLogger,
        clock: createFrozenClock(T0 * 1000),
        admin: false,
        env: { S: SECRET, HOOK: url },
        probeTLS: false,
      }).then(
        async (gateway) => {
          await gateway.close()
          return undefined
        },
        (err: unknown) => err,
      )
      assert.ok(outcome instanceof ConfigError, `start refused with ${url.replace(HOOK_SECRET, '…')}`)
      assert.deepEqual(
        outcome.problems.map((p) => p.path),
        ['alerts.webhook'],
      )
      assert.ok(!outcome.message.includes(HOOK_SECRET), 'the value is never quoted')
      assert.ok(!outcome.message.includes('hooks.example.com'))
    }
  })

  it('the inline form follows the same rule: https, plain http on loopback only, no user:password', () => {
    const check = (webhook: string) => {
      try {
        validateConfig(baseConfig({ alerts: { webhook } }))
        return 'ok'
      } catch (err) {
        assert.ok(err instanceof ConfigError)
        assert.ok(!err.message.includes('XXXXslackTOKENxxxx'), 'the value is never quoted')
        return err.problems.map((p) => `${p.path}: ${p.message}`).join('; ')
      }
    }
    assert.equal(check('https://hooks.example.com/x'), 'ok')
    assert.equal(check('http://127.0.0.1:9/hook'), 'ok')
    assert.equal(check('http://localhost:9/hook'), 'ok')
    assert.equal(check('http://[::1]:9/hook'), 'ok')
    assert.match(check('http://hooks.example.com/x'), /^alerts\.webhook: expected an https:\/\/ URL/)
    assert.match(check('http://127.0.0.1.example.com/x'), /^alerts\.webhook: expected an https:\/\/ URL/)
    assert.match(
      check('https://u:XXXXslackTOKENxxxx@hooks.example.com/x'),
      /^alerts\.webhook: .*user:password/,
    )
    assert.match(check('https://XXXXslackTOKENxxxx@hooks.example.com/x'), /^alerts\.webhook: .*user:password/)
  })

  it('a failed send records and logs a fixed description, never the message of fetch (which quotes the URL)', async () => {
    const store = createMemoryStore()
    const log = capturingLogger()
    const url = `https://hooks.slack.com/services/${HOOK_SECRET}`
    const calls: RequestInit[] = []
    const alerter = createAlerter({
      store,
      thresholdsSeconds: [30 * DAY, 7 * DAY],
      webhook: { url, format: 'slack' },
      log,
      fetch: (async (_input: unknown, init: RequestInit) => {
        calls.push(init)
        // What undici says for an address it cannot use, for instance.
        throw new TypeError(`Failed to parse URL from ${url}`)
      }) as typeof fetch,
    })
    const outcomes = await alerter.check([clientSecretEntry('app', T0 + 5 * DAY, T0)], T0)
    assert.deepEqual(
      outcomes.map((o) => [o.result, o.error]),
      [['failed', 'webhook unreachable (TypeError)']],
    )
    assert.deepEqual(
      (await store.listAlerts()).map((r) => r.lastError),
      ['webhook unreachable (TypeError)'],
    )
    assert.ok(log.lines.some((l) => l.includes('credential_alert_failed')))
    assert.ok(!log.lines.join('\n').includes(HOOK_SECRET), 'the URL is never logged')
    assert.equal(calls[0]?.redirect, 'manual')
  })

  describe('a webhook answering with a redirect', () => {
    let server: HttpServer
    let base: string
    const received: string[] = []
    before(async () => {
      server = createHttpServer((req, res) => {
        req.resume()
        req.on('end', () => {
          received.push(req.url ?? '')
          if (req.url === '/hook') res.writeHead(307, { location: '/elsewhere' }).end()
          else res.writeHead(200).end('ok')
        })
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    })
    after(
      () =>
        new Promise<void>((r) => {
          server.closeAllConnections()
          server.close(() => r())
        }),
    )

    it('is not followed: the alert fails (and is tried again later), nothing goes where it points', async () => {
      const store = createMemoryStore()
      const alerter = createAlerter({
        store,
        thresholdsSeconds: [30 * DAY, 7 * DAY],
        webhook: { url: `${base}/hook`, format: 'json' },
        log: silentLogger,
      })
      const outcomes = await alerter.check([clientSecretEntry('app', T0 + 5 * DAY, T0)], T0)
      assert.deepEqual(
        outcomes.map((o) => [o.result, o.error]),
        [['failed', 'webhook answered with a redirect (HTTP 307), not followed']],
      )
      assert.deepEqual(received, ['/hook'], 'the redirect was not followed')
      assert.equal((await store.listAlerts())[0]?.sentAt, undefined, 'still to be sent')
    })
  })
})

describe('2. one endpoint serving two certificates in turn', () => {
  const cert = (fingerprint: string, validTo: number, observedAt: number): ObservedCertificate => ({
    host: 'app.internal',
    port: 443,
    subject: 'CN=app.internal',
    issuer: 'CN=Internal CA',
    serialNumber: fingerprint,
    fingerprint256: `${fingerprint}:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF`,
    validFrom: observedAt - DAY,
    validTo,
    chainValidTo: validTo,
    chainValidToSubject: 'CN=app.internal',
    authorized: true,
    authorizationError: undefined,
    observedAt,
    how: 'handshake',
  })

  it('alerts once for the old certificate, not at every switch; a real renewal still alerts again', async () => {
    const store = createMemoryStore()
    const sent: string[] = []
    const alerter = createAlerter({
      store,
      thresholdsSeconds: [30 * DAY, 7 * DAY, DAY],
      webhook: { url: 'https://hooks.example.com/gatehouse', format: 'json' },
      log: silentLogger,
      fetch: (async (_input: unknown, init: RequestInit) => {
        const body = JSON.parse(String(init.body)) as {
          threshold: string
          credential: { expires_at: string }
        }
        sent.push(`${body.credential.expires_at} ${body.threshold}`)
        return new Response(null, { status: 200 })
      }) as typeof fetch,
    })
    const old = T0 + 5 * DAY
    const renewed = T0 + 90 * DAY
    // A load balancer in a rolling renewal: half its members still serve the old certificate.
    for (let i = 0; i < 10; i++) {
      const now = T0 + i * 3600
      const c = i % 2 === 0 ? cert('AA', old, now) : cert('BB', renewed, now)
      await alerter.check([tlsEntry(c, 'upstream', 'upstream')], now)
    }
    assert.deepEqual(sent, ['2026-01-06T00:00:00Z 7d'], 'one alert in 10 checks, not 5')

    // The old one, still served when it is a day from its end: its next threshold, once.
    for (let i = 0; i < 4; i++) {
      const now = old - 12 * 3600 + i * 60
      const c = i % 2 === 0 ? cert('AA', old, now) : cert('BB', renewed, now)
      await alerter.check([tlsEntry(c, 'upstream', 'upstream')], now)
    }
    assert.deepEqual(sent, ['2026-01-06T00:00:00Z 7d', '2026-01-06T00:00:00Z 1d'])

    // Renewed for good (only the new certificate now); it approaches its own end and alerts again.
    const later = renewed - 20 * DAY
    await alerter.check([tlsEntry(cert('BB', renewed, later), 'upstream', 'upstream')], later)
    await alerter.check([tlsEntry(cert('BB', renewed, later + 60), 'upstream', 'upstream')], later + 60)
    assert.deepEqual(sent.slice(2), ['2026-04-01T00:00:00Z 30d'])

    // A renewal that is itself short-lived (inside a threshold already) is a new certificate: alerted too.
    const short = later + 6 * DAY
    await alerter.check([tlsEntry(cert('CC', short, later + 120), 'upstream', 'upstream')], later + 120)
    assert.deepEqual(sent.slice(3), [`${new Date(short * 1000).toISOString().replace('.000Z', 'Z')} 7d`])
  })
})

describe('3. TLS probes go only where Gatehouse connects anyway', () => {
  let cert: TestCertificate
  let server: Server
  let port: number
  let connections = 0
  before(async () => {
    cert = makeCertificate({ days: 5, cn: 'internal.test' })
    server = createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => res.end('ok'))
    server.on('connection', () => {
      connections++
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    port = (server.address() as AddressInfo).port
  })
  after(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  )

  it('a host:port named only by the stored discovery document is listed as unknown, not probed, until a real handshake', async () => {
    const config = validateConfig(baseConfig())
    const store = createMemoryStore()
    const now = Math.floor(Date.now() / 1000)
    // Whoever can write the provider's answers (or the store) names an internal service.
    await store.putCached(
      providerCacheKeys(config.provider.issuer).discovery,
      JSON.stringify({
        issuer: config.provider.issuer,
        jwks_uri: `https://127.0.0.1:${port}/jwks`,
        token_endpoint: `https://127.0.0.1:${port}/token`,
      }),
      now,
    )
    const observer = createTLSObserver()
    const collect = (at: number) =>
      collectInventory({
        config,
        now: at,
        store,
        keys: [],
        sessionSecrets: [],
        warnSeconds: 30 * DAY,
        tls: { observer, probe: true, maxAgeSeconds: 3600, probeTimeoutMs: 2000 },
      })
    const id = `tls_certificate:127.0.0.1:${port}`

    const first = (await collect(now)).entries.find((e) => e.id === id)
    assert.ok(first, 'listed')
    assert.equal(first.expiresAt, undefined, 'unknown')
    assert.match(first.detail, /named only by the discovery document/)
    assert.equal(connections, 0, 'no connection made')

    // Gatehouse fetched the JWKS there itself (a handshake through the observing connector), two hours
    // ago: now the endpoint is one it depends on, and an old observation is refreshed by a probe.
    observer.record({
      host: '127.0.0.1',
      port,
      subject: 'CN=internal.test',
      issuer: 'CN=internal.test',
      serialNumber: '01',
      fingerprint256: 'AA',
      validFrom: now - DAY,
      validTo: cert.notAfter,
      chainValidTo: cert.notAfter,
      chainValidToSubject: 'CN=internal.test',
      authorized: true,
      authorizationError: undefined,
      observedAt: now - 2 * 3600,
      how: 'handshake',
    })
    const second = (await collect(now)).entries.find((e) => e.id === id)
    assert.equal(connections, 1, 'probed once it is an endpoint Gatehouse uses')
    assert.equal(second?.expiresAt, cert.notAfter)
    assert.match(second!.where, /^TLS probe/)
    // Still probed when stale after that (the probe replaced the handshake's record).
    await collect(now + 2 * 3600)
    assert.equal(connections, 2)
  })

  it('the issuer and the upstream named by the config are probed', async () => {
    const before = connections
    const config = validateConfig(baseConfig({ upstream: `https://127.0.0.1:${port}` }))
    const inventory = await collectInventory({
      config,
      now: Math.floor(Date.now() / 1000),
      store: createMemoryStore(),
      keys: [],
      sessionSecrets: [],
      warnSeconds: 30 * DAY,
      tls: { observer: createTLSObserver(), probe: true, maxAgeSeconds: 3600, probeTimeoutMs: 2000 },
    })
    assert.equal(connections, before + 1)
    const entry = inventory.entries.find((e) => e.id === `tls_certificate:127.0.0.1:${port}`)
    assert.equal(entry?.expiresAt, cert.notAfter)
    assert.equal(entry?.owner, 'upstream')
  })
})

describe('4. cookie secrets are shown by position; their store key is salted per deployment', () => {
  const weak = 'password1'
  const legacyFingerprint = (s: string) =>
    createHmac('sha256', 'gatehouse secret fingerprint v1').update(s).digest('base64url').slice(0, 10)

  it('names secrets session.secrets[i] everywhere, with nothing derived from them; first seen survives restarts', async () => {
    const config = validateConfig(baseConfig({ session: { secrets: [{ env: 'S' }, { env: 'OLD' }] } }))
    const clock = createFrozenClock(T0 * 1000)
    const now = () => Math.floor(clock.now() / 1000)
    const deployments = [createMemoryStore({ clock }), createMemoryStore({ clock })]
    const seenKeys: string[][] = [[], []]
    const stores = deployments.map((s, i) => ({
      ...s,
      markSeen: (key: string, at: number) => {
        seenKeys[i]!.push(key)
        return s.markSeen(key, at)
      },
    }))
    const collect = (i: number) =>
      collectInventory({
        config,
        now: now(),
        store: stores[i]!,
        keys: [],
        sessionSecrets: [weak, SECRET],
        warnSeconds: 30 * DAY,
        tls: { observer: createTLSObserver(), probe: false, maxAgeSeconds: 3600 },
      })

    // Two instances of one deployment starting at the same moment agree on the salt.
    const [a, b] = await Promise.all([collect(0), collect(0)])
    for (const inventory of [a, b]) {
      const secrets = inventory.entries.filter((e) => e.kind === 'cookie_secret')
      assert.deepEqual(
        secrets.map((e) => [e.id, e.name]),
        [
          ['cookie_secret:session.secrets[0]', 'session.secrets[0]'],
          ['cookie_secret:session.secrets[1]', 'session.secrets[1]'],
        ],
      )
      const shown = JSON.stringify(inventory)
      for (const s of [weak, SECRET]) {
        assert.ok(!shown.includes(s))
        assert.ok(!shown.includes(legacyFingerprint(s)), 'no fingerprint under a public label')
      }
      assert.ok(!shown.includes('#'), 'no fingerprint at all')
    }

    // What the store keeps: not the public-label fingerprint, and not the same in another deployment.
    await collect(1)
    const keyOf = (i: number) => seenKeys[i]![0]!
    assert.ok(!keyOf(0).includes(legacyFingerprint(weak)))
    assert.notEqual(keyOf(0), keyOf(1), 'salted per deployment')
    assert.equal(new Set(seenKeys[0]).size, 2, 'both instances used the same key for each of the two secrets')

    // Days later (a restart: nothing kept in memory), the age counts from the first start.
    clock.advance(6 * DAY * 1000)
    const later = await collect(0)
    assert.deepEqual(
      later.entries.filter((e) => e.kind === 'cookie_secret').map((e) => e.ageSeconds),
      [6 * DAY, 6 * DAY],
    )
  })
})
