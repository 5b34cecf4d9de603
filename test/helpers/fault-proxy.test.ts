/**
 * The fault proxy against a tiny local origin: what passes through untouched, what each fault does to a
 * client, and that the origin is not reached when a fault answers in its place.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, afterEach, before, beforeEach, test } from 'node:test'
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts'
import { freePort } from './net.ts'

const JWKS = {
  keys: [
    { kid: 'old', kty: 'oct' },
    { kid: 'new', kty: 'oct' },
  ],
}

const seen: Array<{ method: string; url: string; headers: IncomingHttpHeaders; body: string }> = []
const origin = createServer((req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8')
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
    const path = (req.url ?? '').split('?')[0]
    if (path === '/json') {
      res.writeHead(201, {
        'content-type': 'application/json',
        'x-origin': 'yes',
        'set-cookie': ['a=1; Path=/', 'b=2; Path=/'],
        'keep-alive': 'timeout=99',
      })
      res.end(JSON.stringify({ hello: 'world', url: req.url }))
      return
    }
    if (path === '/echo') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ method: req.method, body, contentType: req.headers['content-type'] }))
      return
    }
    if (path === '/jwks') {
      res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"', 'cache-control': 'max-age=60' })
      res.end(JSON.stringify(JWKS))
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
  })
})
let originUrl = ''
let proxy: FaultProxy

before(async () => {
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
})
beforeEach(async () => {
  seen.length = 0
  proxy = await startFaultProxy(originUrl)
})
afterEach(() => proxy.close())
after(() => {
  origin.closeAllConnections()
  origin.close()
})

/** Resolves once `p` has seen `n` requests in all: a condition, not a duration. */
async function untilCount(p: FaultProxy, n: number): Promise<void> {
  while (p.count() < n) await new Promise((r) => setTimeout(r, 5))
}

function causeCode(err: unknown): unknown {
  return err instanceof Error && err.cause instanceof Error
    ? (err.cause as NodeJS.ErrnoException).code
    : undefined
}

test('pass: status, headers and JSON body come back; path and query reach the origin', async () => {
  const res = await fetch(`${proxy.url}/json?x=1&y=2`)
  assert.equal(res.status, 201)
  assert.equal(res.headers.get('content-type'), 'application/json')
  assert.equal(res.headers.get('x-origin'), 'yes')
  assert.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/'])
  assert.equal(res.headers.get('keep-alive'), null, 'hop-by-hop header dropped')
  assert.equal(res.headers.get('connection'), 'close')
  assert.deepEqual(await res.json(), { hello: 'world', url: '/json?x=1&y=2' })
  assert.equal(seen.length, 1)
  assert.equal(seen[0]?.url, '/json?x=1&y=2')
  assert.equal(seen[0]?.headers.host, new URL(proxy.url).host, "the client's Host by default")
})

test('pass: a POST body and its content type reach the origin', async () => {
  const res = await fetch(`${proxy.url}/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-custom': 'kept' },
    body: 'grant_type=refresh_token&refresh_token=rt',
  })
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), {
    method: 'POST',
    body: 'grant_type=refresh_token&refresh_token=rt',
    contentType: 'application/x-www-form-urlencoded',
  })
  assert.equal(seen[0]?.headers['x-custom'], 'kept')
})

test('pass: hop-by-hop request headers, and those named in Connection, are not forwarded', async () => {
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(`${proxy.url}/echo`, {
      headers: { connection: 'close, x-hop', 'x-hop': 'secret', te: 'trailers', 'x-end': 'kept' },
    })
    req.on('response', (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
  assert.equal(status, 200)
  const headers = seen[0]?.headers ?? {}
  assert.equal(headers['x-hop'], undefined)
  assert.equal(headers['te'], undefined)
  assert.equal(headers['x-end'], 'kept')
})

test("hostHeader 'target' sends the target's host", async () => {
  const p = await startFaultProxy(originUrl, { hostHeader: 'target' })
  try {
    const res = await fetch(`${p.url}/echo`)
    assert.equal(res.status, 200)
    await res.body?.cancel()
    assert.equal(seen[0]?.headers.host, new URL(originUrl).host)
  } finally {
    await p.close()
  }
})

test('status: answers in the origin’s place with the given status and body', async () => {
  proxy.set('/json', { kind: 'status', status: 504, body: '<html><body>Gateway Timeout</body></html>' })
  const res = await fetch(`${proxy.url}/json`)
  assert.equal(res.status, 504)
  assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
  assert.equal(await res.text(), '<html><body>Gateway Timeout</body></html>')
  assert.equal(seen.length, 0, 'origin not reached')
  assert.equal(proxy.count('/json'), 1)
})

test('hang: the client times out, the origin is not reached, the proxy still closes cleanly', async () => {
  proxy.set('/json', { kind: 'hang' })
  await assert.rejects(fetch(`${proxy.url}/json`, { signal: AbortSignal.timeout(200) }), {
    name: 'TimeoutError',
  })
  assert.equal(proxy.count('/json'), 1)
  assert.equal(seen.length, 0, 'origin not reached')
  await proxy.close()
})

test('hang: close() ends requests still hanging, and the client sees the connection drop', async () => {
  proxy.set('/json', { kind: 'hang' })
  const pending = fetch(`${proxy.url}/json`)
  await untilCount(proxy, 1)
  await proxy.close()
  await assert.rejects(pending, TypeError)
  assert.equal(seen.length, 0)
})

test('reset: fetch rejects without a response, the origin is not reached', async () => {
  proxy.set('/json', { kind: 'reset' })
  await assert.rejects(fetch(`${proxy.url}/json`), TypeError)
  assert.equal(proxy.count('/json'), 1)
  assert.equal(seen.length, 0)
})

test('slow: forwards after the delay, unchanged', async () => {
  proxy.set('/json', { kind: 'slow', delayMs: 30 })
  const res = await fetch(`${proxy.url}/json?slow=1`)
  assert.equal(res.status, 201)
  assert.deepEqual(await res.json(), { hello: 'world', url: '/json?slow=1' })
  assert.equal(seen.length, 1)
})

test('slow: a client that gives up during the delay is never forwarded', async () => {
  proxy.set('/json', { kind: 'slow', delayMs: 60_000 })
  await assert.rejects(fetch(`${proxy.url}/json`, { signal: AbortSignal.timeout(100) }), {
    name: 'TimeoutError',
  })
  assert.equal(proxy.count('/json'), 1)
  assert.equal(seen.length, 0)
})

test('garbage: 200 application/json whose body does not parse', async () => {
  proxy.set('/json', { kind: 'garbage' })
  const res = await fetch(`${proxy.url}/json`)
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'application/json')
  const text = await res.text()
  assert.throws(() => JSON.parse(text), SyntaxError)
  assert.equal(seen.length, 0)
})

test('rewrite: removes a key from a JWKS, content-length matches the new body', async () => {
  let sawContentType: string | undefined
  proxy.set('/jwks', {
    kind: 'rewrite',
    transform: (body, contentType) => {
      sawContentType = contentType
      const doc = JSON.parse(body) as typeof JWKS
      return JSON.stringify({ keys: doc.keys.filter((k) => k.kid !== 'old') })
    },
  })
  const res = await fetch(`${proxy.url}/jwks`, { headers: { 'if-none-match': '"v1"' } })
  assert.equal(res.status, 200, 'conditional headers are not forwarded when rewriting')
  assert.equal(sawContentType, 'application/json')
  assert.equal(res.headers.get('cache-control'), 'max-age=60')
  assert.equal(res.headers.get('etag'), null, 'the origin’s validator does not describe the new body')
  const text = await res.text()
  assert.equal(Number(res.headers.get('content-length')), Buffer.byteLength(text))
  assert.deepEqual(JSON.parse(text), { keys: [{ kid: 'new', kty: 'oct' }] })
  assert.equal(seen.length, 1, 'a rewrite reaches the origin')
})

test('rewrite: a transform that throws becomes a 500 that says so', async () => {
  proxy.set('/jwks', {
    kind: 'rewrite',
    transform: () => {
      throw new Error('boom')
    },
  })
  const res = await fetch(`${proxy.url}/jwks`)
  assert.equal(res.status, 500)
  assert.match(await res.text(), /rewrite failed: boom/)
})

test('matching: exact strings, RegExps and functions, on the path without query; first match wins', async () => {
  proxy.set('/echo', { kind: 'status', status: 401 })
  proxy.set(/^\/js/, { kind: 'status', status: 502 })
  proxy.set((path) => path.startsWith('/j'), { kind: 'status', status: 503 })
  const status = async (path: string) => {
    const res = await fetch(`${proxy.url}${path}`)
    await res.body?.cancel()
    return res.status
  }
  assert.equal(await status('/echo?x=1'), 401, 'query ignored')
  assert.equal(await status('/echo/more'), 404, 'a string matches exactly, not as a prefix')
  assert.equal(await status('/json'), 502, 'the RegExp was set before the function')
  assert.equal(await status('/jwks'), 503)

  // Setting an existing matcher again replaces its fault in place, keeping its position.
  proxy.set(/^\/js/, { kind: 'pass' })
  assert.equal(await status('/json'), 201)
  assert.equal(await status('/jwks'), 503)

  proxy.clear()
  assert.equal(await status('/jwks'), 200)
  assert.equal(await status('/echo'), 200)
})

test('set rejects a malformed fault at once', () => {
  assert.throws(() => proxy.set('/x', { kind: 'status', status: 42 }), TypeError)
  assert.throws(() => proxy.set('/x', { kind: 'slow', delayMs: -1 }), TypeError)
})

test('count: all requests or by path, including failed ones, with queries ignored', async () => {
  proxy.set('/jwks', { kind: 'reset' })
  for (const path of ['/json?a=1', '/json?a=2', '/echo', '/jwks']) {
    await fetch(`${proxy.url}${path}`).then(
      (res) => res.body?.cancel(),
      () => undefined,
    )
  }
  assert.equal(proxy.count(), 4)
  assert.equal(proxy.count('/json'), 2)
  assert.equal(proxy.count('/jwks'), 1, 'a reset request is counted')
  assert.equal(proxy.count(/^\/j/), 3)
  assert.equal(proxy.count('/nothing'), 0)
  proxy.clear()
  assert.equal(proxy.count(), 4, 'clear() keeps counts')
})

test('stop: connections are refused; restart: the same port answers again', async () => {
  const port = await freePort()
  const p = await startFaultProxy(originUrl, { port })
  try {
    assert.equal(p.port, port)
    assert.equal(p.url, `http://127.0.0.1:${port}`)
    assert.equal((await fetch(`${p.url}/json`)).status, 201)

    await p.stop()
    await p.stop()
    const err = await fetch(`${p.url}/json`).then(
      () => undefined,
      (e: unknown) => e,
    )
    assert.ok(err instanceof TypeError)
    assert.equal(causeCode(err), 'ECONNREFUSED')
    assert.equal(p.count(), 1, 'refused connections are not requests')

    await p.restart()
    await p.restart()
    const res = await fetch(`${p.url}/json`)
    assert.equal(res.status, 201)
    assert.deepEqual(await res.json(), { hello: 'world', url: '/json' })
  } finally {
    await p.close()
  }
})

test('stop drops requests that were hanging', async () => {
  proxy.set('/json', { kind: 'hang' })
  const pending = fetch(`${proxy.url}/json`)
  await untilCount(proxy, 1)
  await proxy.stop()
  await assert.rejects(pending, TypeError)
})

test('a target that is down is a 502 from the proxy', async () => {
  const p = await startFaultProxy(`http://127.0.0.1:${await freePort()}`)
  try {
    const res = await fetch(`${p.url}/json`)
    assert.equal(res.status, 502)
    assert.match(await res.text(), /ECONNREFUSED/)
  } finally {
    await p.close()
  }
})

test('close: idempotent, concurrent calls are fine, connections are refused afterwards', async () => {
  await Promise.all([proxy.close(), proxy.close()])
  await proxy.close()
  await proxy.stop()
  await assert.rejects(fetch(`${proxy.url}/json`), TypeError)
  await assert.rejects(proxy.restart(), /after close/)
})

test('startFaultProxy rejects a target that is not an http: URL', async () => {
  await assert.rejects(startFaultProxy('not a url'), TypeError)
  await assert.rejects(startFaultProxy('ftp://127.0.0.1:21'), TypeError)
})
