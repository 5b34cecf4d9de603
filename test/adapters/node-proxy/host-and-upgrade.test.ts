/**
 * What the upstream hears about the connection, over raw sockets against the whole gateway: only
 * WebSocket is tunnelled (an h2c upgrade is served as an ordinary request, without its Upgrade and
 * HTTP2-Settings, and no tunnel opens); Host and X-Forwarded-Host come from public_url, never the
 * client, and a Host naming another site is refused with 421.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../../src/app.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/load.ts'
import { silentLogger } from '../../../src/core/ports.ts'

interface Origin {
  url: string
  requests: Array<{ url: string; headers: IncomingHttpHeaders }>
  upgrades: Array<{ url: string; headers: IncomingHttpHeaders }>
  close(): Promise<void>
}

/** An upstream that answers requests with 200 and accepts any upgrade (as an h2c-capable app would). */
async function startOrigin(): Promise<Origin> {
  const requests: Origin['requests'] = []
  const upgrades: Origin['upgrades'] = []
  const server = createServer((req, res) => {
    requests.push({ url: req.url ?? '', headers: req.headers })
    req.resume()
    req.on('end', () => res.end(`ok ${req.url}`))
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    upgrades.push({ url: req.url ?? '', headers: req.headers })
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${req.headers.upgrade}\r\nconnection: Upgrade\r\n\r\n`,
    )
    socket.on('data', (d) => socket.write(`tunnel:${d}`))
    socket.on('error', () => {})
    socket.on('end', () => socket.end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    requests,
    upgrades,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

async function gatewayFor(origin: Origin, extra: Record<string, unknown> = {}) {
  const config = validateConfig({
    public_url: 'https://app.example.com',
    upstream: origin.url,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-host-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    routes: [{ path: '/public/*', allow: 'anonymous' }],
    ...extra,
  })
  return startGateway(config, {
    baseDir: process.cwd(),
    log: silentLogger,
    admin: false,
    env: { S: 'host-and-upgrade-secret-0123456789-abcdefghij' },
  })
}

/**
 * Sends each of `raws` on one fresh connection, the next once `until` matches what came back so far, and
 * returns everything received when the last matched, the gateway closed the connection, or 5 s passed.
 */
async function exchange(url: string, raws: string[], until: RegExp[]): Promise<string> {
  const { port, hostname } = new URL(url)
  const socket = connect({ port: Number(port), host: hostname })
  socket.on('error', () => {})
  let received = ''
  let step = 0
  const done = new Promise<void>((resolve) => {
    socket.on('data', (d) => {
      received += String(d)
      while (step < raws.length && until[step]!.test(received)) {
        step++
        if (step === raws.length) return resolve()
        socket.write(raws[step]!)
      }
    })
    socket.once('close', () => resolve())
  })
  socket.write(raws[0]!)
  // Bounded: a tunnel that swallows the next request must fail the assertions, not hang the test.
  const bound = setTimeout(() => socket.destroy(), 5000)
  await done
  clearTimeout(bound)
  socket.destroy()
  return received
}

describe('upgrades other than WebSocket are not tunnelled', () => {
  let origin: Origin
  let gateway: Gateway
  before(async () => {
    origin = await startOrigin()
    gateway = await gatewayFor(origin)
  })
  after(async () => {
    await gateway.close()
    await origin.close()
  })

  test('h2c: served as an ordinary request without Upgrade or HTTP2-Settings; the connection stays HTTP/1.1', async () => {
    const h2c =
      'GET /public/h2c HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
      'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n'
    // After it, on the same connection: bytes a tunnel would carry to the upstream unjudged.
    const next = 'GET /public/second HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n'
    const received = await exchange(gateway.url, [h2c, next], [/ok \/public\/h2c/, /ok \/public\/second/])
    assert.doesNotMatch(received, /^HTTP\/1\.1 101/)
    assert.match(received, /^HTTP\/1\.1 200 /)
    assert.match(received, /ok \/public\/h2c/)
    assert.match(received, /ok \/public\/second/, 'the next request was parsed and judged as HTTP/1.1')
    assert.equal(origin.upgrades.length, 0, 'no tunnel was opened to the upstream')
    const seen = origin.requests.find((r) => r.url === '/public/h2c')
    assert.ok(seen, 'the upstream got an ordinary request')
    assert.equal(seen.headers.upgrade, undefined)
    assert.equal(seen.headers['http2-settings'], undefined)
    assert.doesNotMatch(String(seen.headers.connection ?? ''), /upgrade|http2-settings/i)
  })

  test('h2c with the HTTP/2 preface sent right behind it (h2csmuggler): no tunnel, the preface never reaches the upstream', async () => {
    const before = origin.requests.length
    const received = await exchange(
      gateway.url,
      [
        'GET /public/smuggle HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
          'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      ],
      [/ok \/public\/smuggle/],
    )
    assert.match(received, /^HTTP\/1\.1 200 /)
    assert.equal(origin.upgrades.length, 0)
    assert.deepEqual(
      origin.requests.slice(before).map((r) => r.url),
      ['/public/smuggle'],
    )
  })

  test('h2c without naming HTTP2-Settings in Connection, and on a POST: no upgrade, no HTTP2-Settings', async () => {
    const received = await exchange(
      gateway.url,
      [
        'POST /public/post HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n' +
          'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\nhi',
      ],
      [/ok \/public\/post/],
    )
    assert.match(received, /^HTTP\/1\.1 200 /)
    assert.equal(origin.upgrades.length, 0)
    const seen = origin.requests.find((r) => r.url === '/public/post')
    assert.ok(seen)
    assert.equal(seen.headers.upgrade, undefined)
    assert.equal(seen.headers['http2-settings'], undefined)
  })

  test('WebSocket (any case, listed with other protocols) is tunnelled as Upgrade: websocket only', async () => {
    const received = await exchange(
      gateway.url,
      [
        'GET /public/ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, Upgrade\r\n' +
          'Upgrade: h2c, WebSocket\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nSec-WebSocket-Version: 13\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nping',
      ],
      [/tunnel:ping/],
    )
    assert.match(received, /^HTTP\/1\.1 101 /)
    assert.match(received, /tunnel:ping/)
    const seen = origin.upgrades.at(-1)
    assert.ok(seen)
    assert.equal(seen.url, '/public/ws')
    assert.equal(seen.headers.upgrade, 'websocket')
    assert.equal(seen.headers['http2-settings'], undefined)
  })
})

describe('Host: the upstream hears public_url, and other names are refused', () => {
  let origin: Origin
  let gateway: Gateway
  let originHost: string
  before(async () => {
    origin = await startOrigin()
    originHost = new URL(origin.url).host
    gateway = await gatewayFor(origin)
  })
  after(async () => {
    await gateway.close()
    await origin.close()
  })

  test('Host and X-Forwarded-Host evil.example: 421 misdirected_request, the upstream not reached', async () => {
    const before = origin.requests.length
    const received = await exchange(
      gateway.url,
      [
        'GET /public/x HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nAccept: application/json\r\n' +
          'Connection: close\r\n\r\n',
      ],
      [/\}\n?$/],
    )
    assert.match(received, /^HTTP\/1\.1 421 /)
    assert.match(received, /"error":"misdirected_request"/)
    assert.equal(origin.requests.length, before, 'the upstream was not reached')

    const upgrade = await exchange(
      gateway.url,
      [
        'GET /public/ws HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      ],
      [/misdirected_request/],
    )
    assert.match(upgrade, /^HTTP\/1\.1 421 /)
    assert.equal(origin.upgrades.length, 0, 'no tunnel was opened')
  })

  test('a client-sent X-Forwarded-Host is replaced, and the upstream gets public_url as Host', async () => {
    const received = await exchange(
      gateway.url,
      [
        'GET /public/ip HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: evil.example\r\n' +
          'X-Forwarded-Host: evil2.example\r\nConnection: close\r\n\r\n',
      ],
      [/ok \/public\/ip/],
    )
    assert.match(received, /^HTTP\/1\.1 200 /)
    const seen = origin.requests.find((r) => r.url === '/public/ip')
    assert.ok(seen)
    assert.equal(seen.headers.host, 'app.example.com')
    assert.equal(seen.headers['x-forwarded-host'], 'app.example.com')

    // The public name in any case, with a port or a trailing dot, is the public name.
    await exchange(
      gateway.url,
      ['GET /public/case HTTP/1.1\r\nHost: APP.Example.COM.:443\r\nConnection: close\r\n\r\n'],
      [/ok \/public\/case/],
    )
    const cased = origin.requests.find((r) => r.url === '/public/case')
    assert.ok(cased)
    assert.equal(cased.headers.host, 'app.example.com')
  })

  test('WebSocket: the upstream gets public_url as Host and X-Forwarded-Host', async () => {
    await exchange(
      gateway.url,
      [
        'GET /public/ws-host HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: evil.example\r\nConnection: Upgrade\r\n' +
          'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      ],
      [/^HTTP\/1\.1 101 /],
    )
    const seen = origin.upgrades.find((r) => r.url === '/public/ws-host')
    assert.ok(seen)
    assert.equal(seen.headers.host, 'app.example.com')
    assert.equal(seen.headers['x-forwarded-host'], 'app.example.com')
  })

  test('server.allowed_hosts and server.upstream_host: preserve and upstream', async () => {
    const preserving = await gatewayFor(origin, {
      server: { allowed_hosts: ['.example.net'], upstream_host: 'preserve' },
    })
    const own = await gatewayFor(origin, { server: { upstream_host: 'upstream' } })
    try {
      await exchange(
        preserving.url,
        ['GET /public/preserve HTTP/1.1\r\nHost: a.example.net\r\nConnection: close\r\n\r\n'],
        [/ok \/public\/preserve/],
      )
      const preserved = origin.requests.find((r) => r.url === '/public/preserve')
      assert.ok(preserved)
      assert.equal(preserved.headers.host, 'a.example.net')
      assert.equal(preserved.headers['x-forwarded-host'], 'app.example.com')
      const outside = await exchange(
        preserving.url,
        ['GET /public/x HTTP/1.1\r\nHost: example.net.evil.example\r\nConnection: close\r\n\r\n'],
        [/misdirected_request/],
      )
      assert.match(outside, /^HTTP\/1\.1 421 /)

      await exchange(
        own.url,
        ['GET /public/own HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n'],
        [/ok \/public\/own/],
      )
      const upstreamOwn = origin.requests.find((r) => r.url === '/public/own')
      assert.ok(upstreamOwn)
      assert.equal(upstreamOwn.headers.host, originHost)
      assert.equal(upstreamOwn.headers['x-forwarded-host'], 'app.example.com')
    } finally {
      await preserving.close()
      await own.close()
    }
  })

  test('config: allowed_hosts takes host names only', () => {
    assert.throws(
      () =>
        validateConfig({
          public_url: 'https://app.example.com',
          upstream: 'http://127.0.0.1:3000',
          provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
          session: { secrets: [{ env: 'S' }] },
          lifetimes: DEV_LIFETIMES,
          server: { allowed_hosts: ['https://app.example.com:443'] },
        }),
      /server\.allowed_hosts/,
    )
  })
})
