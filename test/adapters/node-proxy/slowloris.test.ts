/**
 * Slow clients against the whole gateway (config `server`): a socket that never finishes its headers is
 * answered 408 and closed after the header timeout, connections past the per-client and the global cap
 * are closed as soon as they are accepted, an idle keep-alive connection is closed, and a client from
 * another address is served all along. Real sockets, small configured timeouts; no durations asserted.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startGateway } from '../../../src/app.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/load.ts'
import { silentLogger } from '../../../src/core/ports.ts'
import { type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'

const SECRET = 'slowloris-test-secret-0123456789-abcdefghij'

async function gatewayFor(upstream: RecordingUpstream, server: Record<string, unknown>) {
  const config = validateConfig({
    public_url: 'http://127.0.0.1:8080',
    upstream: upstream.url,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-slow-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    routes: [{ path: '/public/*', allow: 'anonymous' }],
    // The slow sockets must not trip the request rate limit first.
    rate_limits: { client: false, auth_endpoints: false },
    server,
  })
  return startGateway(config, {
    baseDir: process.cwd(),
    log: silentLogger,
    admin: { host: '127.0.0.1', port: 0 },
    env: { S: SECRET },
  })
}

interface Slow {
  socket: Socket
  received: string
  /** Connected, or already closed. */
  settled: Promise<void>
  closed: Promise<void>
}

/** A socket that starts a request and then sends one header byte every 50 ms, never ending its headers. */
function slowSocket(port: number): Slow {
  const socket = connect({ port, host: '127.0.0.1' })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const settled = new Promise<void>((resolve) => {
    socket.once('connect', () => resolve())
    socket.once('close', () => resolve())
  })
  const slow: Slow = { socket, received: '', settled, closed }
  socket.on('error', () => {})
  socket.on('data', (d) => (slow.received += String(d)))
  socket.once('connect', () => {
    socket.write('GET /public/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ')
    const drip = setInterval(() => {
      if (socket.writable) socket.write('a')
    }, 50)
    socket.once('close', () => clearInterval(drip))
  })
  return slow
}

/** A plain request from another loopback address (Linux routes all of 127/8 to lo). */
function getFrom(localAddress: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, agent: false }, (res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function refusedCount(gateway: { metrics: { registry: { getSingleMetric(n: string): unknown } } }) {
  const metric = gateway.metrics.registry.getSingleMetric('gatehouse_connections_refused_total') as
    | { get(): Promise<{ values: Array<{ value: number; labels: { reason?: string } }> }> }
    | undefined
  assert.ok(metric, 'the refusal counter is registered')
  const counts: Record<string, number> = {}
  for (const v of (await metric.get()).values) counts[v.labels.reason ?? ''] = v.value
  return counts
}

test('slowloris: over the per-client cap closed at once, the rest closed at the header timeout, others served', {
  timeout: 30_000,
}, async () => {
  const upstream = await startRecordingUpstream()
  const gateway = await gatewayFor(upstream, {
    headers_timeout: '300ms',
    max_connections_per_client: 20,
    max_connections: 1000,
  })
  const port = Number(new URL(gateway.url).port)
  try {
    const slow = Array.from({ length: 200 }, () => slowSocket(port))
    await Promise.all(slow.map((s) => s.settled))

    // While they drip, a client at another address is served, and the upstream sees its request.
    const served = await getFrom('127.0.0.2', `${gateway.url}/public/during`)
    assert.equal(served.status, 200)
    assert.ok(upstream.requests.some((r) => r.url === '/public/during'))

    await Promise.all(slow.map((s) => s.closed))
    const timedOut = slow.filter((s) => s.received.startsWith('HTTP/1.1 408 '))
    const cut = slow.filter((s) => s.received === '')
    assert.ok(timedOut.length >= 1, 'sockets that never finished their headers got 408 and were closed')
    assert.ok(cut.length >= 100, `sockets past the per-client cap were closed at once (${cut.length})`)
    assert.equal(
      timedOut.length + cut.length,
      slow.length,
      'every slow socket was closed one way or the other',
    )
    assert.equal((await refusedCount(gateway))['max_connections_per_client'], cut.length)
    assert.ok(
      !upstream.requests.some((r) => r.url === '/public/slow'),
      'no slow request reached the upstream',
    )

    // The admin port has the same header timeout.
    const admin = new URL(gateway.adminUrl!)
    const adminSlow = connect({ port: Number(admin.port), host: '127.0.0.1' })
    let adminReceived = ''
    adminSlow.on('data', (d) => (adminReceived += String(d)))
    adminSlow.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    await once(adminSlow, 'close')
    assert.match(adminReceived, /^HTTP\/1\.1 408 /)
  } finally {
    await gateway.close()
    await upstream.close()
  }
})

test('past max_connections new connections are closed at once; an idle keep-alive connection is closed', {
  timeout: 30_000,
}, async () => {
  const upstream = await startRecordingUpstream()
  const gateway = await gatewayFor(upstream, {
    headers_timeout: '300ms',
    keep_alive_timeout: '300ms',
    max_connections: 10,
    max_connections_per_client: false,
  })
  const port = Number(new URL(gateway.url).port)
  try {
    const slow = Array.from({ length: 40 }, () => slowSocket(port))
    await Promise.all(slow.map((s) => s.closed))
    const cut = slow.filter((s) => s.received === '')
    assert.ok(cut.length >= 20, `connections past the global cap were closed at once (${cut.length})`)
    assert.equal((await refusedCount(gateway))['max_connections'], cut.length)

    // Once the slow ones are gone, a request is served, and its idle connection is then closed.
    const socket = connect({ port, host: '127.0.0.1' })
    let received = ''
    socket.on('data', (d) => (received += String(d)))
    socket.write('GET /public/after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await once(socket, 'close')
    assert.match(received, /^HTTP\/1\.1 200 /)
    assert.ok(upstream.requests.some((r) => r.url === '/public/after'))
  } finally {
    await gateway.close()
    await upstream.close()
  }
})

test('config: server limits have safe defaults and refuse a request timeout below the header timeout', () => {
  const base = {
    public_url: 'http://127.0.0.1:8080',
    upstream: 'http://127.0.0.1:3000',
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
  }
  const config = validateConfig(base)
  assert.equal(config.server.headers_timeout, 10_000)
  assert.equal(config.server.request_timeout, 0)
  assert.equal(config.server.keep_alive_timeout, 5_000)
  assert.equal(config.server.max_connections, 10_000)
  assert.equal(config.server.max_connections_per_client, 256)
  assert.equal(validateConfig({ ...base, server: { request_timeout: '2m' } }).server.request_timeout, 120_000)
  assert.throws(
    () => validateConfig({ ...base, server: { headers_timeout: '10s', request_timeout: '5s' } }),
    /request_timeout/,
  )
  assert.throws(() => validateConfig({ ...base, server: { headers_timeout: 0 } }), /headers_timeout/)
})
