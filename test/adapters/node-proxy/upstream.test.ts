import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { createUpstream } from '../../../src/adapters/node-proxy/upstream.ts'
import { closedPort, listen, type Seen, seen, send, startGateway } from './helpers.ts'

const MB = 1024 * 1024

async function* chunks(total: number, size = 64 * 1024): AsyncGenerator<Buffer> {
  let sent = 0
  let n = 0
  while (sent < total) {
    const chunk = Buffer.alloc(Math.min(size, total - sent), n++ % 251)
    sent += chunk.length
    yield chunk
  }
}

async function sha256Of(
  source: AsyncIterable<Buffer> | Iterable<Buffer>,
): Promise<{ hex: string; length: number }> {
  const hash = createHash('sha256')
  let length = 0
  for await (const chunk of source) {
    hash.update(chunk)
    length += chunk.length
  }
  return { hex: hash.digest('hex'), length }
}

describe('createUpstream', () => {
  it('rejects a malformed URL or option at once', () => {
    assert.throws(() => createUpstream({ url: 'not a url' }), TypeError)
    assert.throws(() => createUpstream({ url: 'ftp://127.0.0.1/' }), TypeError)
    assert.throws(() => createUpstream({ url: 'http://127.0.0.1/?a=1' }), TypeError)
    assert.throws(() => createUpstream({ url: 'http://127.0.0.1/', connections: 0 }), TypeError)
    assert.throws(() => createUpstream({ url: 'http://127.0.0.1/', headersTimeoutMs: -1 }), TypeError)
  })
})

describe('forward', () => {
  const requests: Seen[] = []
  let connections = 0
  const origin = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    requests.push(seen(req))
    if (req.url?.startsWith('/app/echo')) {
      // Streams the body back as it arrives, and its digest in a trailer-free second request.
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      req.pipe(res)
      return
    }
    if (req.url?.startsWith('/app/digest')) {
      const { hex, length } = await sha256Of(req)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ hex, length }))
      return
    }
    if (req.url === '/app/headers') {
      res.writeHead(200, [
        'Content-Type',
        'text/plain',
        'Connection',
        'keep-alive, X-Upstream-Private',
        'X-Upstream-Private',
        'secret',
        'Keep-Alive',
        'timeout=99',
        'Proxy-Authenticate',
        'Basic realm="x"',
        'X-Frame-Options',
        'SAMEORIGIN',
        'Set-Cookie',
        'app=1; Path=/',
      ])
      res.end('ok')
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(`hello ${req.method} ${req.url}`)
  })
  origin.on('connection', () => {
    connections++
  })

  let upstream: Awaited<ReturnType<typeof listen>>
  let gateway: Awaited<ReturnType<typeof startGateway>>

  before(async () => {
    upstream = await listen(origin)
    gateway = await startGateway(`${upstream.url}/app/`, {
      cookie: 'theme=dark',
      responseHeaders: {
        addIfAbsent: [
          ['x-frame-options', 'DENY'],
          ['x-content-type-options', 'nosniff'],
        ],
        append: [['Set-Cookie', '__Host-gatehouse=s; Path=/; Secure; HttpOnly; SameSite=Lax']],
      },
    })
  })
  after(async () => {
    await gateway.close()
    await upstream.close()
  })

  it('forwards a GET to the base path and returns the response', async () => {
    requests.length = 0
    const reply = await send(`${gateway.url}/hello?x=1`)
    assert.equal(reply.status, 200)
    assert.equal(reply.body.toString(), 'hello GET /app/hello?x=1')
    assert.equal(requests.length, 1)
    assert.equal(requests[0]!.url, '/app/hello?x=1')
    assert.equal(requests[0]!.headers['transfer-encoding'], undefined, 'a GET gets no chunked body')
  })

  it('answers HEAD with the upstream headers and no body', async () => {
    const reply = await send(`${gateway.url}/hello`, { method: 'HEAD' })
    assert.equal(reply.status, 200)
    assert.equal(reply.headers['content-type'], 'text/plain')
    assert.equal(reply.body.length, 0)
    assert.equal(requests.at(-1)!.method, 'HEAD')
  })

  it('streams a 5 MB POST body to the upstream intact', async () => {
    const expected = await sha256Of(chunks(5 * MB))
    const reply = await send(`${gateway.url}/digest`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: chunks(5 * MB),
    })
    assert.equal(reply.status, 200)
    assert.deepEqual(JSON.parse(reply.body.toString()), expected)
  })

  it('streams a 5 MB body both ways with Content-Length', async () => {
    const expected = await sha256Of(chunks(5 * MB))
    const reply = await send(`${gateway.url}/echo`, {
      method: 'PUT',
      headers: { 'content-length': String(5 * MB) },
      body: chunks(5 * MB),
    })
    assert.equal(reply.status, 200)
    assert.deepEqual(await sha256Of([reply.body]), expected)
    assert.equal(requests.at(-1)!.headers['content-length'], String(5 * MB))
  })

  it('sends forwarding and identity headers, never the client-sent ones', async () => {
    requests.length = 0
    await send(`${gateway.url}/`, {
      headers: {
        'X-Auth-Request-User': 'admin',
        'X-Forwarded-For': '10.6.6.6',
        'X-Forwarded-Host': 'evil.example',
        'X-Real-IP': '10.6.6.6',
        Forwarded: 'for=10.6.6.6',
        'X-Gatehouse-Anything': 'forged',
        Cookie: '__Host-gatehouse=secret; theme=dark',
      },
    })
    const h = requests[0]!.headers
    assert.equal(h['x-auth-request-user'], 'alice')
    assert.equal(h['x-forwarded-for'], '127.0.0.1')
    assert.equal(h['x-real-ip'], '127.0.0.1')
    assert.equal(h['x-forwarded-proto'], 'http')
    assert.equal(h['x-forwarded-host'], `127.0.0.1:${gateway.port}`)
    assert.equal(h['host'], `127.0.0.1:${gateway.port}`, 'Host is kept as the client sent it')
    assert.equal(h['forwarded'], undefined)
    assert.equal(h['x-gatehouse-anything'], undefined)
    assert.equal(h['cookie'], 'theme=dark')
    assert.equal(requests[0]!.rawHeaders.filter((n) => n.toLowerCase() === 'x-auth-request-user').length, 1)
  })

  it('removes hop-by-hop headers both ways', async () => {
    requests.length = 0
    const reply = await send(`${gateway.url}/headers`, {
      headers: {
        Connection: 'keep-alive, X-Client-Private',
        'X-Client-Private': 'secret',
        'Keep-Alive': 'timeout=5',
        'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
        'Proxy-Connection': 'keep-alive',
        TE: 'trailers',
      },
    })
    const h = requests[0]!.headers
    for (const name of ['x-client-private', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te']) {
      assert.equal(h[name], undefined, name)
    }
    assert.equal(reply.headers['x-upstream-private'], undefined)
    assert.notEqual(reply.headers['keep-alive'], 'timeout=99', "the upstream's Keep-Alive is not relayed")
    assert.equal(reply.headers['proxy-authenticate'], undefined)
    assert.equal(reply.body.toString(), 'ok')
  })

  it('adds security headers only when absent and keeps the upstream Set-Cookie beside the gateway one', async () => {
    const reply = await send(`${gateway.url}/headers`)
    assert.equal(reply.headers['x-frame-options'], 'SAMEORIGIN')
    assert.equal(reply.headers['x-content-type-options'], 'nosniff')
    assert.deepEqual(reply.headers['set-cookie'], [
      'app=1; Path=/',
      '__Host-gatehouse=s; Path=/; Secure; HttpOnly; SameSite=Lax',
    ])
  })

  it('reuses one keep-alive upstream connection for sequential requests', async () => {
    // Start from a known pool: a fresh gateway, so earlier tests' connections do not count.
    const fresh = await startGateway(upstream.url)
    try {
      const before = connections
      for (let i = 0; i < 5; i++) {
        const reply = await send(`${fresh.url}/n${i}`)
        assert.equal(reply.status, 200)
      }
      assert.equal(connections - before, 1)
    } finally {
      await fresh.close()
    }
  })
})

describe('backpressure', () => {
  it('stops reading the upstream while the client does not read', async () => {
    const total = 48 * MB
    const chunk = Buffer.alloc(64 * 1024, 7)
    let written = 0
    let waitingForDrain = false
    let finished = false
    const origin = await listen(
      createServer(async (_req, res) => {
        res.writeHead(200, { 'content-length': String(total) })
        while (written < total) {
          written += chunk.length
          if (!res.write(chunk)) {
            waitingForDrain = true
            await once(res, 'drain')
            waitingForDrain = false
          }
        }
        res.end(() => {
          finished = true
        })
      }),
    )
    // The gateway's own response buffer, watched on every write.
    let maxBuffered = 0
    const upstream = createUpstream({ url: origin.url })
    const gateway = await listen(
      createServer((req, res) => {
        const write = res.write.bind(res) as (chunk: Buffer) => boolean
        res.write = ((data: Buffer) => {
          const ok = write(data)
          maxBuffered = Math.max(maxBuffered, res.writableLength)
          return ok
        }) as typeof res.write
        upstream.forward(req, res, { path: req.url ?? '/', headers: {} })
      }),
    )
    try {
      const req = request(`${gateway.url}/big`, { agent: false })
      req.end()
      const [res] = (await once(req, 'response')) as [IncomingMessage]
      res.pause()
      // Let the pipe fill up: wait until the origin is stuck (no progress for many event-loop turns) or done.
      let last = -1
      let still = 0
      while (!finished && still < 200) {
        await new Promise((resolve) => setImmediate(resolve))
        if (waitingForDrain && written === last) still++
        else still = 0
        last = written
      }
      assert.equal(finished, false, 'the origin could send everything while the client read nothing')
      assert.ok(written < total / 2, `origin wrote ${written} of ${total} bytes before the client read`)
      let received = 0
      for await (const data of res) received += (data as Buffer).length
      assert.equal(received, total)
      assert.ok(maxBuffered < 2 * MB, `the gateway buffered up to ${maxBuffered} bytes`)
    } finally {
      await gateway.close()
      await upstream.close()
      await origin.close()
    }
  })

  it('stops reading the client while the upstream does not read', async () => {
    const total = 48 * MB
    const chunk = Buffer.alloc(64 * 1024, 9)
    let arrived!: (req: IncomingMessage) => void
    const upstreamRequest = new Promise<IncomingMessage>((resolve) => {
      arrived = resolve
    })
    let upstreamRes: ServerResponse | undefined
    const origin = await listen(
      createServer((req, res) => {
        req.pause()
        upstreamRes = res
        arrived(req)
      }),
    )
    const gateway = await startGateway(origin.url)
    try {
      const req = request(`${gateway.url}/upload`, {
        method: 'POST',
        agent: false,
        headers: { 'content-length': String(total) },
      })
      const replied = once(req, 'response') as Promise<[IncomingMessage]>
      let written = 0
      let waitingForDrain = false
      let finished = false
      void (async () => {
        while (written < total) {
          written += chunk.length
          if (!req.write(chunk)) {
            waitingForDrain = true
            await once(req, 'drain')
            waitingForDrain = false
          }
        }
        req.end()
        finished = true
      })()
      const body = await upstreamRequest
      let last = -1
      let still = 0
      while (!finished && still < 200) {
        await new Promise((resolve) => setImmediate(resolve))
        if (waitingForDrain && written === last) still++
        else still = 0
        last = written
      }
      assert.equal(finished, false, 'the client could send everything while the upstream read nothing')
      assert.ok(written < total / 2, `client wrote ${written} of ${total} bytes before the upstream read`)
      const { length } = await sha256Of(body)
      assert.equal(length, total)
      upstreamRes!.end('done')
      const [res] = await replied
      assert.equal(res.statusCode, 200)
      res.resume()
    } finally {
      await gateway.close()
      await origin.close()
    }
  })
})

describe('upstream failures', () => {
  it('answers 502 in JSON or HTML when the upstream refuses the connection', async () => {
    const port = await closedPort()
    const gateway = await startGateway(`http://127.0.0.1:${port}`, {
      responseHeaders: { addIfAbsent: [['x-content-type-options', 'nosniff']] },
    })
    try {
      const json = await send(`${gateway.url}/`, { headers: { accept: 'application/json' } })
      assert.equal(json.status, 502)
      assert.match(String(json.headers['content-type']), /^application\/json/)
      assert.equal(json.headers['cache-control'], 'no-store')
      assert.equal(json.headers['x-content-type-options'], 'nosniff')
      assert.equal(JSON.parse(json.body.toString()).error, 'bad_gateway')

      const html = await send(`${gateway.url}/`, { headers: { accept: 'text/html,application/xhtml+xml' } })
      assert.equal(html.status, 502)
      assert.match(String(html.headers['content-type']), /^text\/html/)
      assert.equal(html.headers['cache-control'], 'no-store')
      assert.match(html.body.toString(), /502 Bad Gateway/)

      assert.deepEqual(
        gateway.errors.map((e) => e.kind),
        ['connect', 'connect'],
      )
    } finally {
      await gateway.close()
    }
  })

  it('answers 504 when the upstream does not send headers in time', async () => {
    let reached = 0
    const silent = await listen(
      createServer(() => {
        reached++ // never answers
      }),
    )
    const gateway = await startGateway(silent.url, { upstream: { headersTimeoutMs: 100 } })
    try {
      const reply = await send(`${gateway.url}/slow`, { headers: { accept: 'application/json' } })
      assert.equal(reply.status, 504)
      assert.equal(reply.headers['cache-control'], 'no-store')
      assert.equal(JSON.parse(reply.body.toString()).error, 'gateway_timeout')
      assert.equal(reached, 1)
      assert.deepEqual(
        gateway.errors.map((e) => e.kind),
        ['timeout'],
      )
    } finally {
      await gateway.close()
      await silent.close()
    }
  })

  it('answers 502 when the upstream resets the connection before answering', async () => {
    const rude = await listen(
      createServer((req) => {
        req.socket.destroy()
      }),
    )
    const gateway = await startGateway(rude.url)
    try {
      const reply = await send(`${gateway.url}/`, { method: 'POST', body: Buffer.from('x') })
      assert.equal(reply.status, 502)
      assert.deepEqual(
        gateway.errors.map((e) => e.kind),
        ['reset'],
      )
    } finally {
      await gateway.close()
      await rude.close()
    }
  })

  it('destroys the client connection when the upstream fails mid-response', async () => {
    const halfway = await listen(
      createServer((_req, res) => {
        res.writeHead(200, { 'content-length': '1000' })
        res.write('partial', () => res.socket?.destroy())
      }),
    )
    const gateway = await startGateway(halfway.url)
    try {
      await assert.rejects(send(`${gateway.url}/`), /aborted|ECONNRESET|socket hang up/)
      assert.equal(gateway.errors.length, 1)
    } finally {
      await gateway.close()
      await halfway.close()
    }
  })

  it('aborts the upstream request when the client goes away', async () => {
    let upstreamSawClose!: () => void
    const closed = new Promise<void>((resolve) => {
      upstreamSawClose = resolve
    })
    let arrived!: () => void
    const reached = new Promise<void>((resolve) => {
      arrived = resolve
    })
    const slow = await listen(
      createServer((_req, res) => {
        res.once('close', () => {
          if (!res.writableFinished) upstreamSawClose()
        })
        arrived()
      }),
    )
    const gateway = await startGateway(slow.url)
    try {
      const req = request(`${gateway.url}/long`, { agent: false })
      req.on('error', () => {})
      req.end()
      await reached
      req.destroy()
      await closed
      assert.deepEqual(gateway.errors, [], 'a client going away is not an upstream failure')
    } finally {
      await gateway.close()
      await slow.close()
    }
  })

  it('does not reach the upstream for a client that left before forward was called', async () => {
    let reached = 0
    const origin = await listen(
      createServer((_req, res) => {
        reached++
        res.end()
      }),
    )
    const upstream = createUpstream({ url: origin.url })
    let forwarded!: () => void
    const done = new Promise<void>((resolve) => {
      forwarded = resolve
    })
    // As the server glue does: an asynchronous decision first, then forward.
    const gateway = await listen(
      createServer((req, res) => {
        res.once('close', () => {
          upstream.forward(req, res, { path: '/', headers: {} })
          forwarded()
        })
      }),
    )
    try {
      const req = request(`${gateway.url}/`, { agent: false })
      req.on('error', () => {})
      req.end()
      req.once('socket', (socket) => socket.once('connect', () => setImmediate(() => req.destroy())))
      await done
      // A request that did reach the origin would arrive before this one.
      assert.equal((await send(`${origin.url}/`)).status, 200)
      assert.equal(reached, 1, 'only the probe reached the origin')
    } finally {
      await gateway.close()
      await upstream.close()
      await origin.close()
    }
  })
})

describe('upgrade', () => {
  type Handshake =
    | { kind: 'upgraded'; socket: Socket; res: IncomingMessage }
    | { kind: 'refused'; res: IncomingMessage }

  function handshake(url: string, path: string): Promise<Handshake> {
    const req = request(`${url}${path}`, {
      agent: false,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'X-Auth-Request-User': 'admin' },
    })
    req.end()
    return new Promise((resolve, reject) => {
      req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        if (head.length > 0) socket.unshift(head)
        resolve({ kind: 'upgraded', socket, res })
      })
      req.on('response', (res: IncomingMessage) => resolve({ kind: 'refused', res }))
      req.on('error', reject)
    })
  }

  it('passes bytes both ways after the upstream answers 101', async () => {
    const upgrades: Seen[] = []
    const origin = createServer((_req, res) => {
      res.writeHead(404).end()
    })
    origin.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      upgrades.push(seen(req))
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
      socket.on('data', (data: Buffer) => socket.write(`echo:${data.toString()}`))
      socket.on('end', () => socket.end())
    })
    const ws = await listen(origin)
    const gateway = await startGateway(`${ws.url}/base`)
    try {
      const result = await handshake(gateway.url, '/socket')
      assert.equal(result.kind, 'upgraded')
      if (result.kind !== 'upgraded') return
      const { socket, res } = result
      assert.equal(res.statusCode, 101)
      assert.equal(res.headers['upgrade'], 'websocket')
      socket.write('ping')
      const [data] = (await once(socket, 'data')) as [Buffer]
      assert.equal(data.toString(), 'echo:ping')
      socket.destroy()

      assert.equal(upgrades.length, 1)
      const h = upgrades[0]!.headers
      assert.equal(upgrades[0]!.url, '/base/socket')
      assert.equal(h['upgrade'], 'websocket')
      assert.equal(h['x-auth-request-user'], 'alice')
      assert.equal(h['x-forwarded-for'], '127.0.0.1')
    } finally {
      await gateway.close()
      await ws.close()
    }
  })

  it('relays a refusal from the upstream as an ordinary response', async () => {
    const origin = createServer(() => {})
    origin.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope')
    })
    const ws = await listen(origin)
    const gateway = await startGateway(ws.url)
    try {
      const { kind, res } = await handshake(gateway.url, '/')
      assert.equal(kind, 'refused')
      assert.equal(res.statusCode, 403)
      const body: Buffer[] = []
      for await (const chunk of res) body.push(chunk as Buffer)
      assert.equal(Buffer.concat(body).toString(), 'nope')
    } finally {
      await gateway.close()
      await ws.close()
    }
  })

  it('answers 502 on the raw socket when the upstream is down', async () => {
    const gateway = await startGateway(`http://127.0.0.1:${await closedPort()}`)
    try {
      const { kind, res } = await handshake(gateway.url, '/')
      assert.equal(kind, 'refused')
      assert.equal(res.statusCode, 502)
      assert.equal(res.headers['cache-control'], 'no-store')
      res.resume()
      assert.deepEqual(
        gateway.errors.map((e) => e.kind),
        ['connect'],
      )
    } finally {
      await gateway.close()
    }
  })
})
