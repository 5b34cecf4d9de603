/**
 * A provider on a private PKI (an internal Keycloak with its own CA), live: a real IdP serving HTTPS
 * with a certificate of a test CA that expires in 5 days. With `provider.ca` the gateway fetches
 * discovery and JWKS over TLS, and the expiry inventory lists the provider's certificate as read in
 * those handshakes, trusted; the probe of the issuer (the gateway's, and `gatehouse expiry`) uses the
 * same trust. Without it the provider is not trusted. Frozen clock, no sleeps.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { getCACertificates } from 'node:tls'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { assess, type ExpiryEntry } from '../../src/expiry/inventory.ts'
import { readCAFile } from '../../src/expiry/tls.ts'
import { makeCA, makeCertificate, type TestCertificate } from '../helpers/certs.ts'
import { runCli } from '../helpers/cli.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const DAY = 86_400
const SECRET = 'provider-tls-test-secret-0123456789-abcdef'
const UNTRUSTED = /NOT trusted \((unable to verify the first certificate|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)/

describe('a provider on a private PKI (provider.ca)', () => {
  let ca: TestCertificate
  let serverCert: TestCertificate
  let idp: TestIdP
  let dir: string
  const gateways: Gateway[] = []

  before(async () => {
    ca = makeCA({ days: 30, cn: 'Internal Test CA' })
    serverCert = makeCertificate({ days: 5, cn: 'idp.internal.test', signedBy: ca })
    dir = mkdtempSync(join(tmpdir(), 'gh-provider-tls-'))
    writeFileSync(join(dir, 'ca.pem'), ca.certPem)
    idp = await startTestIdP({ redirectUris: ['http://localhost:8080/oauth2/callback'], tls: serverCert })
  })
  after(async () => {
    for (const g of gateways) await g.close()
    await idp.close()
  })

  async function start(options: { ca: boolean; probeTLS: boolean }) {
    const clock = createFrozenClock(Date.now())
    const config = validateConfig({
      public_url: 'http://localhost:8080',
      upstream: 'http://127.0.0.1:9',
      data_dir: mkdtempSync(join(dir, 'data-')),
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'S' },
        // Relative to the config file's directory, like tls.cert.
        ...(options.ca ? { ca: 'ca.pem' } : {}),
      },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
    })
    const gateway = await startGateway(config, {
      baseDir: dir,
      clock,
      log: silentLogger,
      env: { S: SECRET },
      listen: { host: '127.0.0.1', port: 0 },
      admin: false,
      probeTLS: options.probeTLS,
    })
    gateways.push(gateway)
    // The inventory taken at start (it may still be running) is not the one under test.
    await gateway.expiry.run()
    return { gateway, clock, now: () => Math.floor(clock.now() / 1000) }
  }

  const providerEntry = (entries: ExpiryEntry[]) => {
    const entry = entries.find((e) => e.id === `tls_certificate:127.0.0.1:${idp.port}`)
    assert.ok(entry, `no provider TLS entry in ${JSON.stringify(entries.map((e) => e.id))}`)
    return entry
  }

  it('the test IdP serves HTTPS under an https issuer', () => {
    assert.equal(idp.issuer, `https://127.0.0.1:${idp.port}/_idp`)
  })

  it('with provider.ca: discovery and JWKS over TLS; the certificate is read from those handshakes, trusted, 5 days out', async () => {
    const { gateway, now } = await start({ ca: true, probeTLS: false })
    await gateway.providerCache.refreshNow()
    const status = gateway.providerCache.status()
    assert.equal(status.lastError, undefined)
    assert.equal(status.metadata.source, 'network')
    assert.equal(status.jwks.source, 'network')

    const { inventory } = await gateway.expiry.run()
    const entry = providerEntry(inventory.entries)
    assert.equal(entry.kind, 'tls_certificate')
    assert.equal(entry.owner, 'provider')
    assert.equal(entry.name, `provider 127.0.0.1:${idp.port}`)
    assert.equal(entry.where, `TLS handshake 127.0.0.1:${idp.port}`, 'observed in a handshake, not a probe')
    assert.equal(entry.expiresAt, serverCert.notAfter)
    assert.ok(Math.abs(entry.expiresAt! - now() - 5 * DAY) < 300, 'expires 5 days out')
    assert.equal(entry.detail, 'CN=idp.internal.test, issued by CN=Internal Test CA, trusted')
    assert.equal(assess(entry, now(), 30 * DAY), 'warning')
    // The copies fetched over TLS are in the inventory too.
    assert.ok(inventory.entries.some((e) => e.kind === 'provider_cache'))
  })

  it('with provider.ca: a probe of the issuer (no handshake for an hour) uses the same trust', async () => {
    const { gateway, clock, now } = await start({ ca: true, probeTLS: true })
    await gateway.providerCache.refreshNow()
    clock.advance(2 * 3600 * 1000)
    const { inventory } = await gateway.expiry.run()
    const entry = providerEntry(inventory.entries)
    assert.equal(entry.where, `TLS probe 127.0.0.1:${idp.port}`)
    assert.equal(entry.observedAt, now())
    assert.equal(entry.expiresAt, serverCert.notAfter)
    assert.match(entry.detail, /issued by CN=Internal Test CA, trusted$/)
  })

  it('without provider.ca: discovery fails, and the inventory reports the certificate as not trusted', async () => {
    const { gateway } = await start({ ca: false, probeTLS: true })
    await assert.rejects(gateway.providerCache.refreshNow())
    assert.equal(gateway.providerCache.status().metadata.source, 'none')
    const { inventory } = await gateway.expiry.run()
    const entry = providerEntry(inventory.entries)
    // No handshake succeeded: the probe read the certificate anyway, and says why it is not trusted.
    assert.equal(entry.where, `TLS probe 127.0.0.1:${idp.port}`)
    assert.equal(entry.expiresAt, serverCert.notAfter)
    assert.match(entry.detail, UNTRUSTED)
  })

  it('the trust is Node’s default anchors plus the CA file, so public providers still verify', () => {
    const trust = readCAFile('ca.pem', dir, 'provider.ca')
    assert.ok(trust)
    const defaults = getCACertificates('default')
    assert.ok(defaults.length > 0)
    assert.deepEqual(trust.slice(0, defaults.length), defaults)
    assert.equal(trust.length, defaults.length + 1)
    assert.equal(trust.at(-1)?.trim(), ca.certPem.trim())
    assert.equal(readCAFile(undefined, dir, 'provider.ca'), undefined)
  })

  it('a CA file that is missing or holds no certificate stops the start with an error naming provider.ca', async () => {
    writeFileSync(join(dir, 'not-a-ca.pem'), 'hello\n')
    for (const [file, why] of [
      ['missing.pem', /provider\.ca: cannot read CA file missing\.pem: ENOENT/],
      ['not-a-ca.pem', /provider\.ca: CA file not-a-ca\.pem: no PEM certificate found/],
    ] as const) {
      const config = validateConfig({
        public_url: 'http://localhost:8080',
        upstream: 'http://127.0.0.1:9',
        data_dir: mkdtempSync(join(dir, 'data-')),
        provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'S' }, ca: file },
        session: { secrets: [{ env: 'S' }] },
        lifetimes: DEV_LIFETIMES,
      })
      await assert.rejects(
        startGateway(config, {
          baseDir: dir,
          log: silentLogger,
          env: { S: SECRET },
          listen: { host: '127.0.0.1', port: 0 },
          admin: false,
        }),
        why,
      )
    }
  })

  describe('gatehouse expiry (the CLI)', () => {
    function writeConfig(name: string, withCA: boolean): string {
      const file = join(dir, name)
      writeFileSync(
        file,
        `public_url: http://localhost:8080
upstream: http://127.0.0.1:9
data_dir: data-${name}
provider:
  issuer: ${idp.issuer}
  client_id: cli-client
  client_secret: { env: GH_TEST_SECRET }
${withCA ? '  ca: ca.pem\n' : ''}session: { secrets: [{ env: GH_TEST_SECRET }] }
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
`,
      )
      return file
    }

    // Asynchronous: the IdP it probes runs in this process and must keep answering.
    const cli = (...args: string[]) => runCli(['expiry', ...args], { GH_TEST_SECRET: SECRET })

    const providerTLS = (stdout: string) => {
      const out = JSON.parse(stdout) as { entries: Array<Record<string, unknown>> }
      const entry = out.entries.find((e) => e['id'] === `tls_certificate:127.0.0.1:${idp.port}`)
      assert.ok(entry, stdout)
      return entry
    }

    it('probes the issuer with provider.ca: trusted, expiring within the window', async () => {
      const r = await cli('--config', writeConfig('with-ca.yaml', true), '--json')
      assert.equal(r.status, 1, r.stderr)
      const entry = providerTLS(r.stdout)
      assert.equal(entry['where'], `TLS probe 127.0.0.1:${idp.port}`)
      assert.equal(entry['status'], 'warning')
      assert.equal(entry['owner'], 'provider')
      assert.equal(entry['detail'], 'CN=idp.internal.test, issued by CN=Internal Test CA, trusted')
      assert.equal(
        entry['expires_at'],
        new Date(serverCert.notAfter * 1000).toISOString().replace('.000Z', 'Z'),
      )
    })

    it('without provider.ca the same certificate is reported as not trusted', async () => {
      const r = await cli('--config', writeConfig('without-ca.yaml', false), '--json')
      assert.equal(r.status, 1, r.stderr)
      assert.match(String(providerTLS(r.stdout)['detail']), UNTRUSTED)
    })
  })
})
