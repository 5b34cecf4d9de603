/**
 * The credential inventory (Gatehouse 5) against real parts: a TLS server on loopback presenting a
 * certificate that expires in 5 days, an oidc-provider publishing x5c, Gatehouse's own keys, with a
 * frozen clock. Then the CLI: its table, JSON and exit codes.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Agent } from 'undici'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { crossedThresholds } from '../../src/expiry/alerts.ts'
import { collectInventory } from '../../src/expiry/collect.ts'
import {
  apiTokenEntries,
  assess,
  type ExpiryEntry,
  signingKeyEntries,
  soonestFirst,
} from '../../src/expiry/inventory.ts'
import { createObservingConnector, createTLSObserver, probeTLS } from '../../src/expiry/tls.ts'
import { createProviderCache } from '../../src/keys/provider-cache.ts'
import { openTokenServices } from '../../src/services.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { makeCertificate, type TestCertificate } from '../helpers/certs.ts'
import { runCli } from '../helpers/cli.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const DAY = 86_400
const SECRET = 'inventory-test-secret-0123456789-abcdefghij'

async function startTLSServer(
  cert: TestCertificate,
): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => res.end('ok'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

function configFor(upstream: string, issuer: string, extra: Record<string, unknown> = {}) {
  return validateConfig({
    public_url: 'http://localhost:8080',
    upstream,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-inv-')),
    provider: { issuer, client_id: 'gatehouse-test', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    ...extra,
  })
}

describe('inventory builders', () => {
  const now = 1_767_225_600
  const key = (kid: string, state: 'next' | 'current' | 'retired', activatesAt: number) => ({
    kid,
    alg: 'EdDSA' as const,
    state,
    createdAt: activatesAt - DAY,
    activatesAt,
    retiresAt: activatesAt + 30 * DAY,
    removeAt: activatesAt + 120 * DAY,
  })

  it('own signing keys are renewed automatically while a successor is published, overdue when rotation stalls', () => {
    const current = key('cur', 'current', now - 10 * DAY)
    const next = key('nxt', 'next', now + 20 * DAY)
    const [cur, nxt] = signingKeyEntries([current, next], now, 'store')
    assert.equal(cur?.renewal, 'automatic')
    assert.equal(cur?.expiresAt, current.retiresAt)
    assert.equal(assess(cur!, now, 30 * DAY), 'automatic', 'inside 30d, but rotation is scheduled')
    assert.deepEqual(crossedThresholds(cur!, now, [30 * DAY, 7 * DAY, DAY]), [], 'no alert')
    assert.match(cur!.detail, /nxt \(published\) takes over/)
    assert.equal(assess(nxt!, now, 30 * DAY), 'automatic')
    // Two hours past its retirement and still current: the ring did not tick.
    assert.equal(assess(cur!, current.retiresAt + 2 * 3600, 30 * DAY), 'overdue')
    // Without a successor it is a manual matter, and the thresholds apply.
    const [alone] = signingKeyEntries([current], now, 'store')
    assert.equal(alone?.renewal, 'manual')
    assert.equal(assess(alone!, now, 30 * DAY), 'warning')
    assert.match(alone!.detail, /gatehouse keys rotate/)
  })

  it('API tokens expiring soon are grouped by subject, soonest first; revoked and derived ones left out', () => {
    const t = (jti: string, subject: string, expiresIn: number, extra = {}) => ({
      jti,
      subject,
      scopes: [],
      audience: 'a',
      parentJti: undefined,
      issuedAt: now - DAY,
      expiresAt: now + expiresIn,
      revokedAt: undefined,
      description: undefined,
      ...extra,
    })
    const entries = apiTokenEntries(
      [
        t('a1', 'ci', 10 * DAY),
        t('a2', 'ci', 3 * DAY, { description: 'deploys' }),
        t('b1', 'backup', 60 * DAY),
        t('c1', 'revoked', DAY, { revokedAt: now - 5 }),
        t('d1', 'derived', DAY, { parentJti: 'a1' }),
      ],
      now,
      30 * DAY,
    )
    assert.deepEqual(
      entries.map((e) => [e.id, e.expiresAt]),
      [['api_tokens:ci', now + 3 * DAY]],
    )
    assert.match(entries[0]!.detail, /token a2 \(deploys\) and 1 more within 30d/)
  })

  it('sorts soonest first, entries without an expiry last', () => {
    const e = (id: string, expiresAt: number | undefined): ExpiryEntry => ({
      id,
      kind: 'provider_key',
      name: id,
      owner: 'provider',
      where: 'x',
      observedAt: now,
      expiresAt,
      renewal: 'manual',
      detail: '',
    })
    assert.deepEqual(
      soonestFirst([e('c', undefined), e('b', now + 5), e('a', now - 5)]).map((x) => x.id),
      ['a', 'b', 'c'],
    )
  })
})

describe('inventory against real parts', () => {
  let upstreamCert: TestCertificate
  let idpCert: TestCertificate
  let upstream: Awaited<ReturnType<typeof startTLSServer>>
  let idp: TestIdP

  before(async () => {
    upstreamCert = makeCertificate({ days: 5, cn: 'upstream.test' })
    idpCert = makeCertificate({ days: 20, cn: 'idp signing', type: 'rsa' })
    upstream = await startTLSServer(upstreamCert)
    idp = await startTestIdP({
      redirectUris: ['http://localhost:8080/oauth2/callback'],
      signingCertificate: idpCert,
    })
  })

  after(async () => {
    await upstream.close()
    await idp.close()
  })

  it('lists the TLS certificate expiring in 5 days first, the x5c certificate, own keys and provider copies', async () => {
    const clock = createFrozenClock(Date.now())
    const now = () => Math.floor(clock.now() / 1000)
    const store = createMemoryStore({ clock })
    const config = configFor(`https://127.0.0.1:${upstream.port}`, idp.issuer, {
      provider: {
        issuer: idp.issuer,
        client_id: 'gatehouse-test',
        client_secret: { env: 'S' },
        client_secret_expires: new Date((now() + 200 * DAY) * 1000).toISOString().slice(0, 10),
      },
    })
    const cache = createProviderCache({
      issuer: idp.issuer,
      clock,
      log: silentLogger,
      store,
      timeoutMs: 5000,
    })
    await cache.refreshNow()
    const services = await openTokenServices(config, {
      baseDir: process.cwd(),
      clock,
      log: silentLogger,
      env: { S: SECRET },
      store,
    })
    try {
      const collect = () =>
        collectInventory({
          config,
          now: now(),
          store,
          keys: services.keyRing.list(),
          sessionSecrets: [SECRET],
          warnSeconds: 30 * DAY,
          tls: { observer: createTLSObserver(), probe: true, maxAgeSeconds: 3600 },
        })
      const inventory = await collect()
      const byId = new Map(inventory.entries.map((e) => [e.id, e]))

      // Sorted by expiry; the provider copies (3 days of outage grace, renewed automatically) come first.
      assert.deepEqual(
        inventory.entries.slice(0, 2).map((e) => e.id),
        ['provider_cache:discovery', 'provider_cache:jwks'],
      )
      const soonest = inventory.entries.find((e) => e.renewal === 'manual')!
      assert.equal(soonest.id, `tls_certificate:127.0.0.1:${upstream.port}`)
      assert.equal(soonest.owner, 'upstream')
      assert.equal(soonest.expiresAt, upstreamCert.notAfter)
      assert.ok(Math.abs(soonest.expiresAt! - now() - 5 * DAY) < 120, 'about 5 days left')
      assert.match(soonest.detail, /CN=upstream\.test/)
      assert.match(soonest.detail, /NOT trusted/, 'self-signed: reported, still read')
      assert.equal(assess(soonest, now(), 30 * DAY), 'warning')

      const x5c = byId.get('provider_certificate:x5c-rs256')
      assert.ok(x5c, 'the x5c certificate of the provider key')
      assert.equal(x5c.expiresAt, idpCert.notAfter)
      assert.equal(x5c.owner, 'provider')
      assert.match(x5c.where, /\/jwks \(x5c\)$/)
      const bare = inventory.entries.find((e) => e.kind === 'provider_key')
      assert.ok(bare, 'the ES256 key without x5c')
      assert.equal(bare.expiresAt, undefined)
      assert.match(bare.detail, /no expiry published/)

      const own = inventory.entries.filter((e) => e.kind === 'signing_key')
      assert.deepEqual(
        own.map((e) => e.name).sort(),
        services.keyRing
          .list()
          .map((k) => k.kid)
          .sort(),
      )
      assert.ok(own.every((e) => assess(e, now(), 30 * DAY) === 'automatic'))

      const jwksCopy = byId.get('provider_cache:jwks')
      assert.equal(jwksCopy?.expiresAt, now() + config.provider.cache.stale_if_error)
      assert.equal(assess(jwksCopy!, now(), 30 * DAY), 'automatic')

      const secret = byId.get('cookie_secret:session.secrets[0]')
      assert.equal(secret?.ageSeconds, 0)
      assert.ok(!JSON.stringify(inventory).includes(SECRET), 'the secret never appears')

      assert.equal(byId.get('client_secret:gatehouse-test')?.owner, 'operator')

      // A day on without a refresh: the provider copies are overdue, still serving.
      clock.advance(DAY * 1000)
      const dayLater = await collect()
      assert.equal(
        assess(dayLater.entries.find((e) => e.id === 'provider_cache:jwks')!, now(), 30 * DAY),
        'overdue',
      )
      // Six days on: the certificate has expired, so have the copies (3 days of stale_if_error);
      // the cookie secret is six days old (first seen was recorded).
      clock.advance(5 * DAY * 1000)
      const later = await collect()
      const tls = later.entries.find((e) => e.id === soonest.id)!
      assert.equal(assess(tls, now(), 30 * DAY), 'expired')
      assert.equal(
        assess(later.entries.find((e) => e.id === 'provider_cache:jwks')!, now(), 30 * DAY),
        'expired',
      )
      assert.equal(later.entries.find((e) => e.kind === 'cookie_secret')?.ageSeconds, 6 * DAY)
      assert.equal(
        assess(later.entries.find((e) => e.kind === 'provider_certificate')!, now(), 30 * DAY),
        'warning',
      )
    } finally {
      await services.close()
    }
  })

  it('reads the certificate from the handshakes Gatehouse makes anyway (the observing connector)', async () => {
    const observer = createTLSObserver()
    const agent = new Agent({
      connect: createObservingConnector(observer, () => 1_800_000_000, { ca: upstreamCert.certPem }),
    })
    try {
      const res = await fetch(`https://127.0.0.1:${upstream.port}/`, { dispatcher: agent } as RequestInit)
      assert.equal(await res.text(), 'ok')
      const seen = observer.get('127.0.0.1', upstream.port)
      assert.ok(seen)
      assert.equal(seen.how, 'handshake')
      assert.equal(seen.authorized, true)
      assert.equal(seen.validTo, upstreamCert.notAfter)
      assert.equal(seen.observedAt, 1_800_000_000)
    } finally {
      await agent.close()
    }
  })

  it('a probe of a closed port fails with a clear message', async () => {
    const dead = await startTLSServer(upstreamCert)
    await dead.close()
    await assert.rejects(probeTLS('127.0.0.1', dead.port, { nowSeconds: 0, timeoutMs: 2000 }), /ECONNREFUSED/)
  })
})

describe('gatehouse expiry (the CLI)', () => {
  let cert: TestCertificate
  let upstream: Awaited<ReturnType<typeof startTLSServer>>
  let dir: string

  before(async () => {
    cert = makeCertificate({ days: 5, cn: 'cli-upstream.test' })
    upstream = await startTLSServer(cert)
    dir = mkdtempSync(join(tmpdir(), 'gh-expiry-cli-'))
  })
  after(() => upstream.close())

  function writeConfig(name: string, extra = ''): string {
    const file = join(dir, name)
    writeFileSync(
      file,
      `public_url: http://localhost:8080
upstream: https://127.0.0.1:${upstream.port}
data_dir: data-${name}
provider: { issuer: 'http://127.0.0.1:9/idp', client_id: cli-client, client_secret: { env: GH_TEST_SECRET } }
session: { secrets: [{ env: GH_TEST_SECRET }] }
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
${extra}`,
    )
    return file
  }

  // Asynchronous: the TLS server it probes runs in this process and must keep answering.
  const cli = (...args: string[]) => runCli(['expiry', ...args], { GH_TEST_SECRET: SECRET })

  it('prints the table soonest first and exits 1 when something expires within --warn', async () => {
    const file = writeConfig('a.yaml')
    const r = await cli('--config', file)
    assert.equal(r.status, 1, r.stderr)
    const lines = r.stdout.split('\n')
    assert.match(lines[0]!, /^STATUS\s+EXPIRES\s+IN\s+KIND\s+OWNER\s+NAME$/)
    assert.match(
      lines[1]!,
      new RegExp(
        `^warning\\s+\\S+Z\\s+(5d|4d 23h)\\s+tls_certificate\\s+upstream\\s+upstream 127\\.0\\.0\\.1:${upstream.port}$`,
      ),
    )
    assert.match(lines[2]!, /CN=cli-upstream\.test/)
    assert.match(r.stdout, /signing_key/)
    assert.match(r.stdout, /1 expires or needs attention within 30d/)
    assert.ok(!r.stdout.includes(SECRET))
  })

  it('exits 0 when nothing expires within a shorter --warn, and prints JSON', async () => {
    const file = writeConfig('b.yaml')
    const r = await cli('--config', file, '--warn', '2d', '--json')
    assert.equal(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.equal(out.warn_seconds, 2 * DAY)
    assert.equal(out.needs_attention, 0)
    const first = out.entries[0]
    assert.equal(first.kind, 'tls_certificate')
    assert.equal(first.status, 'ok')
    assert.equal(first.expires_at, new Date(cert.notAfter * 1000).toISOString().replace('.000Z', 'Z'))
    assert.ok(Math.abs(first.expires_in_seconds - 5 * DAY) < 300)
    assert.ok(
      out.entries.some(
        (e: { kind: string; status: string }) => e.kind === 'signing_key' && e.status === 'automatic',
      ),
    )
  })

  it('exits 1 on an expired client secret, offline without probing', async () => {
    const file = writeConfig('c.yaml')
    const yaml = `provider: { issuer: 'http://127.0.0.1:9/idp', client_id: cli-client, client_secret: { env: GH_TEST_SECRET }, client_secret_expires: 2020-01-01 }`
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^provider: .*$/m, yaml))
    const r = await cli('--config', file, '--offline', '--warn', '1d')
    assert.equal(r.status, 1, r.stderr)
    assert.match(r.stdout, /^expired\s+2020-01-01T00:00:00Z\s+-\d+d.*client_secret\s+operator\s+cli-client$/m)
    assert.match(r.stdout, /unknown\s+-\s+-\s+tls_certificate.*\n\s+not observed: no connection made yet/)
  })

  it('refuses a bad --warn with exit 2 and a clear message', async () => {
    const r = await cli('--config', writeConfig('d.yaml'), '--warn', 'soon')
    assert.equal(r.status, 2)
    assert.match(r.stderr, /--warn expects a duration such as 30d, 12h or 90m, got "soon"/)
  })
})
