/**
 * The admin port answers only for names that cannot be rebound to it (IP literals, localhost) and those
 * configured (admin.allowed_hosts): a page on evil.example whose name resolves to 127.0.0.1 makes the
 * browser send `Host: evil.example:9090`, and gets 421 with nothing of the port's data. Raw sockets.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import type { Server } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { createAdminServer } from '../../src/admin/admin-server.ts'
import { createMetrics } from '../../src/admin/metrics.ts'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'

/** One raw request with this Host; the whole answer as text (the server closes: Connection: close). */
async function get(port: number, path: string, host: string | undefined): Promise<string> {
  const socket = connect({ port, host: '127.0.0.1' })
  let received = ''
  socket.on('data', (d) => (received += String(d)))
  const lines = [
    `GET ${path} HTTP/1.1`,
    ...(host === undefined ? [] : [`Host: ${host}`]),
    'Connection: close',
  ]
  socket.write(`${lines.join('\r\n')}\r\n\r\n`)
  await once(socket, 'close')
  return received
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return (server.address() as { port: number }).port
}

test('admin port: a rebound name gets 421 misdirected_request and no data; loopback names and IPs are served', async () => {
  let statusCalls = 0
  const admin = createAdminServer({
    metrics: createMetrics(),
    ready: async () => ({ ready: true, checks: { provider: 'ok' } }),
    status: async () => {
      statusCalls++
      return { provider: { issuer: 'https://idp.example' } }
    },
    allowedHosts: ['.internal.example'],
  })
  const port = await listen(admin)
  try {
    for (const path of ['/metrics', '/status.json', '/readyz']) {
      const refused = await get(port, path, 'evil.example:9090')
      assert.match(refused, /^HTTP\/1\.1 421 /, path)
      assert.match(refused, /"error":"misdirected_request"/)
      assert.doesNotMatch(refused, /gatehouse_|issuer|provider/, 'nothing of the admin data')
    }
    assert.equal(statusCalls, 0, 'the status was not even computed')
    // Suffix rules match whole labels only; a look-alike is refused.
    assert.match(await get(port, '/healthz', 'evilinternal.example'), /^HTTP\/1\.1 421 /)
    assert.match(await get(port, '/healthz', 'internal.example.evil.example'), /^HTTP\/1\.1 421 /)
    assert.match(await get(port, '/healthz', 'evil.example@127.0.0.1'), /^HTTP\/1\.1 421 /)

    for (const host of [
      `localhost:${port}`,
      'LOCALHOST',
      `127.0.0.1:${port}`,
      '[::1]:9090',
      '10.0.0.7:9090',
      'prom.internal.example',
      'internal.example:9090',
    ]) {
      assert.match(await get(port, '/metrics', host), /^HTTP\/1\.1 200 [\s\S]*gatehouse_/, host)
    }
    assert.match(await get(port, '/status.json', 'localhost'), /^HTTP\/1\.1 200 /)
  } finally {
    admin.close()
  }
})

test('admin.allowed_hosts reaches the admin port through the config', async () => {
  const config = validateConfig({
    public_url: 'http://127.0.0.1:8080',
    upstream: 'http://127.0.0.1:9',
    data_dir: mkdtempSync(join(tmpdir(), 'gh-admin-host-')),
    listen: { host: '127.0.0.1', port: 0 },
    admin: { allowed_hosts: ['metrics.internal.example'] },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
  })
  assert.throws(
    () => validateConfig({ ...config, admin: { allowed_hosts: ['http://x.example'] } }),
    /admin\.allowed_hosts/,
  )
  const gateway = await startGateway(config, {
    baseDir: process.cwd(),
    log: silentLogger,
    admin: { host: '127.0.0.1', port: 0 },
    env: { S: 'admin-host-test-secret-0123456789-abcdefghij' },
  })
  try {
    const port = Number(new URL(gateway.adminUrl!).port)
    assert.match(await get(port, '/healthz', 'metrics.internal.example:9090'), /^HTTP\/1\.1 200 /)
    assert.match(await get(port, '/healthz', 'evil.example:9090'), /^HTTP\/1\.1 421 /)
  } finally {
    await gateway.close()
  }
})
