/**
 * Provider calls from a viewer trigger fit CloudFront's 5 s: GETs are retried once on a 5xx or a
 * failed connection, POSTs (single-use code, rotating refresh token) never; a spent budget fails at
 * once. A real local server answers; the budget clock is injected, never waited on.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { createEdgeFetch } from '../../../src/adapters/edge/edge-fetch.ts'

describe('createEdgeFetch', () => {
  let server: Server
  let base: string
  const hits: string[] = []
  let failNext = 0

  before(async () => {
    server = createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`)
      if (failNext > 0) {
        failNext--
        res.writeHead(503).end('down')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(() => new Promise<void>((resolve) => server.close(() => resolve())))

  test('a GET that got a 5xx is tried once more; a POST is not', async () => {
    const { fetch: f, startInvocation } = createEdgeFetch(fetch)
    startInvocation()
    hits.length = 0
    failNext = 1
    const get = await f(`${base}/jwks`)
    assert.equal(get.status, 200)
    assert.deepEqual(hits, ['GET /jwks', 'GET /jwks'])
    hits.length = 0
    failNext = 1
    const post = await f(`${base}/token`, { method: 'POST', body: 'grant_type=authorization_code' })
    assert.equal(post.status, 503, 'the 5xx is returned as it is, for the caller to report')
    assert.deepEqual(hits, ['POST /token'])
  })

  test('a GET that cannot connect is tried once more, then the error surfaces', async () => {
    const { fetch: f } = createEdgeFetch(fetch)
    await assert.rejects(f('http://127.0.0.1:1/unreachable'), TypeError)
  })

  test('no retry without enough budget left, and nothing at all once the budget is spent', async () => {
    let t = 0
    const { fetch: f, startInvocation } = createEdgeFetch(fetch, {
      budgetMs: 4000,
      minRetryMs: 500,
      now: () => t,
    })
    startInvocation()
    hits.length = 0
    failNext = 1
    t = 3700 // 300 ms left: too little for a second attempt
    assert.equal((await f(`${base}/late`)).status, 503)
    assert.deepEqual(hits, ['GET /late'])
    t = 4000
    hits.length = 0
    await assert.rejects(f(`${base}/spent`), { name: 'TimeoutError' })
    assert.deepEqual(hits, [], 'the provider is not called')
    startInvocation()
    assert.equal((await f(`${base}/next`)).status, 200, 'each invocation has its own budget')
  })
})
