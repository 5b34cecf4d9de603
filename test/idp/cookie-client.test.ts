import assert from 'node:assert/strict'
import { describe, it } from 'node:test'

import { createCookieClient } from '../helpers/cookie-client.ts'

interface Seen {
  url: string
  method: string
  cookie: string | null
  contentType: string | null
  body: string | null
}

// A scripted server: each URL answers with the given status and headers; every request is recorded.
function fakeFetch(routes: Record<string, { status?: number; headers?: [string, string][] }>) {
  const seen: Seen[] = []
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input)
    const headers = new Headers(init?.headers)
    seen.push({
      url: url.href,
      method: init?.method ?? 'GET',
      cookie: headers.get('cookie'),
      contentType: headers.get('content-type'),
      body: typeof init?.body === 'string' ? init.body : null,
    })
    assert.equal(init?.redirect, 'manual')
    const route = routes[url.href] ?? routes[url.origin + url.pathname] ?? {}
    return new Response(null, { status: route.status ?? 200, headers: route.headers ?? [] })
  }) as typeof fetch
  return { seen, fetchImpl }
}

describe('createCookieClient', () => {
  it('keeps host-only cookies to their host and Domain cookies to the domain and its subdomains', async () => {
    const { seen, fetchImpl } = fakeFetch({
      'http://example.com/set': {
        headers: [
          ['set-cookie', 'host=1; Path=/'],
          ['set-cookie', 'dom=2; Domain=.example.com; Path=/'],
          ['set-cookie', 'evil=3; Domain=other.com; Path=/'],
        ],
      },
    })
    const client = createCookieClient({ fetch: fetchImpl })
    await client.request('http://example.com/set')
    await client.request('http://example.com/x')
    await client.request('http://app.example.com/x')
    await client.request('http://other.com/x')
    assert.deepEqual(
      seen.slice(1).map((s) => s.cookie),
      ['host=1; dom=2', 'dom=2', null],
    )
  })

  it('sends a cookie only under its path, defaulting to the directory of the setting URL', async () => {
    const { seen, fetchImpl } = fakeFetch({
      'http://h.test/a/b/set': { headers: [['set-cookie', 'dflt=1']] },
      'http://h.test/set': { headers: [['set-cookie', 'p=2; Path=/a']] },
    })
    const client = createCookieClient({ fetch: fetchImpl })
    await client.request('http://h.test/a/b/set')
    await client.request('http://h.test/set')
    for (const path of ['/a', '/a/b', '/a/b/c', '/ab', '/']) await client.request(`http://h.test${path}`)
    assert.deepEqual(
      seen.slice(2).map((s) => s.cookie),
      ['p=2', 'dflt=1; p=2', 'dflt=1; p=2', null, null],
    )
    assert.deepEqual(
      client.cookies('http://h.test/a/b/c').map((c) => [c.name, c.path]),
      [
        ['dflt', '/a/b'],
        ['p', '/a'],
      ],
    )
  })

  it('expires by Max-Age (over Expires) on its clock and deletes on Max-Age=0 or a past Expires', async () => {
    let nowMs = Date.UTC(2026, 0, 1)
    const { fetchImpl } = fakeFetch({
      'http://h.test/set': {
        headers: [
          ['set-cookie', 'short=1; Max-Age=10; Expires=Fri, 01 Jan 2100 00:00:00 GMT'],
          ['set-cookie', 'dated=2; Expires=Thu, 01 Jan 2026 00:01:00 GMT'],
          ['set-cookie', 'session=3'],
        ],
      },
      'http://h.test/clear': {
        headers: [
          ['set-cookie', 'session=; Max-Age=0'],
          ['set-cookie', 'dated=; Expires=Thu, 01 Jan 1970 00:00:00 GMT'],
        ],
      },
    })
    const client = createCookieClient({ fetch: fetchImpl, now: () => nowMs })
    await client.request('http://h.test/set')
    const names = () => client.cookies('http://h.test/').map((c) => c.name)
    assert.deepEqual(names().sort(), ['dated', 'session', 'short'])
    nowMs += 10_000
    assert.deepEqual(names().sort(), ['dated', 'session'])
    await client.request('http://h.test/clear')
    assert.deepEqual(names(), [])
  })

  it('neither stores a Secure cookie from http nor sends one over http', async () => {
    const { seen, fetchImpl } = fakeFetch({
      'http://h.test/set': { headers: [['set-cookie', 'plain=1; Secure']] },
      'https://h.test/set': {
        headers: [
          ['set-cookie', 'sec=2; Secure; Path=/'],
          ['set-cookie', '__Host-ok=3; Secure; Path=/'],
          ['set-cookie', '__Host-bad=4; Secure; Path=/x'],
        ],
      },
    })
    const client = createCookieClient({ fetch: fetchImpl })
    await client.request('http://h.test/set')
    await client.request('https://h.test/set')
    await client.request('http://h.test/')
    await client.request('https://h.test/')
    assert.deepEqual(
      seen.slice(2).map((s) => s.cookie),
      [null, 'sec=2; __Host-ok=3'],
    )
  })

  it('follows relative redirects, turns a 303 after POST into a GET and lists the hops', async () => {
    const { seen, fetchImpl } = fakeFetch({
      'http://h.test/form': { status: 303, headers: [['location', '/next?x=1']] },
      'http://h.test/next?x=1': { status: 302, headers: [['location', 'done']] },
    })
    const client = createCookieClient({ fetch: fetchImpl })
    const result = await client.follow('http://h.test/form', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'a=1',
    })
    assert.equal(result.response.status, 200)
    assert.equal(result.url, 'http://h.test/done')
    assert.deepEqual(result.hops, ['http://h.test/form', 'http://h.test/next?x=1', 'http://h.test/done'])
    assert.deepEqual(
      seen.map((s) => [s.method, s.body, s.contentType]),
      [
        ['POST', 'a=1', 'application/x-www-form-urlencoded'],
        ['GET', null, null],
        ['GET', null, null],
      ],
    )
  })

  it('gives up after maxHops redirects', async () => {
    const { fetchImpl } = fakeFetch({
      'http://h.test/loop': { status: 302, headers: [['location', '/loop']] },
    })
    const client = createCookieClient({ fetch: fetchImpl })
    await assert.rejects(client.follow('http://h.test/loop', {}, 3), /more than 3 redirects/)
  })

  it('posts a form urlencoded', async () => {
    const { seen, fetchImpl } = fakeFetch({})
    await createCookieClient({ fetch: fetchImpl }).postForm('http://h.test/login', { user: 'a b', pw: 'x&y' })
    assert.deepEqual(seen[0], {
      url: 'http://h.test/login',
      method: 'POST',
      cookie: null,
      contentType: 'application/x-www-form-urlencoded',
      body: 'user=a+b&pw=x%26y',
    })
  })
})
