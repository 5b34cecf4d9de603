/**
 * Gatehouse terminating TLS (config `tls`): the certificate is served, replaced on disk and reloaded
 * without a restart; a broken pair is refused and the old certificate stays; the inventory shows what
 * is served.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { Agent } from 'undici'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { probeTLS } from '../../src/expiry/tls.ts'
import { makeCertificate } from '../helpers/certs.ts'

test('serves HTTPS with tls.cert, reloads a renewed certificate without a restart, refuses a broken pair', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-tls-'))
  const first = makeCertificate({ days: 10, cn: 'first.gatehouse.test' })
  const second = makeCertificate({ days: 90, cn: 'second.gatehouse.test' })
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  writeFileSync(certFile, first.certPem)
  writeFileSync(keyFile, first.keyPem)
  const clock = createFrozenClock(Date.now())
  const config = validateConfig({
    public_url: 'https://localhost:8443',
    upstream: 'http://127.0.0.1:9',
    data_dir: join(dir, 'data'),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    tls: { cert: 'cert.pem', key: 'key.pem' },
  })
  const gateway = await startGateway(config, {
    baseDir: dir,
    log: silentLogger,
    clock,
    admin: false,
    env: { S: 'tls-reload-test-secret-0123456789-abcdefgh' },
    probeTLS: false,
  })
  const port = Number(new URL(gateway.url).port)
  const served = async () => (await probeTLS('127.0.0.1', port, { nowSeconds: 0 })).subject
  try {
    assert.match(gateway.url, /^https:\/\/127\.0\.0\.1:\d+$/)
    // A real request over TLS, trusting only the first certificate.
    const agent = new Agent({ connect: { ca: first.certPem } })
    const res = await fetch(`${gateway.url}/oauth2/userinfo`, { dispatcher: agent } as RequestInit)
    assert.equal(res.status, 401)
    await res.body?.cancel()
    await agent.close()
    assert.equal(await served(), 'CN=first.gatehouse.test')
    assert.equal(gateway.reloadTLS(), false, 'nothing changed')

    let inventory = (await gateway.expiry.run()).inventory
    assert.equal(
      inventory.entries.find((e) => e.id === 'tls_certificate:gatehouse')?.expiresAt,
      first.notAfter,
    )

    // Renewed on disk (certbot-style: key then certificate).
    writeFileSync(keyFile, second.keyPem)
    writeFileSync(certFile, second.certPem)
    assert.equal(gateway.reloadTLS(), true)
    assert.equal(await served(), 'CN=second.gatehouse.test', 'new connections get the new certificate')
    inventory = (await gateway.expiry.run()).inventory
    const own = inventory.entries.find((e) => e.id === 'tls_certificate:gatehouse')
    assert.equal(own?.expiresAt, second.notAfter)
    assert.equal(own?.owner, 'operator')

    // Half a renewal: a certificate that does not match the key is refused; the last good pair stays.
    writeFileSync(certFile, first.certPem)
    assert.throws(() => gateway.reloadTLS(), /are not a usable pair/)
    assert.equal(await served(), 'CN=second.gatehouse.test')
  } finally {
    await gateway.close()
  }
})
