/**
 * Open redirects through dot segments (Gatehouse 8, item 2): every Location the core builds from a
 * client's `rd` (or `X-Forwarded-Uri`) is a path of the public origin once resolved, the way a browser
 * resolves it.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Decision } from '../../src/core/decisions.ts'
import { cookieHeaderFrom, facts, NAV, setup, signIn } from './fixtures.ts'

const ORIGIN = 'https://app.example.com'
const HOSTILE = [
  '/.//evil.example',
  '/..//x',
  '/%2e%2e//evil.example',
  '/a/..//evil.example',
  '/.%2f/evil.example',
]

function location(d: Decision): string {
  assert.equal(d.kind, 'respond', JSON.stringify(d))
  if (d.kind !== 'respond') throw new Error('unreachable')
  assert.equal(d.status, 302, JSON.stringify(d))
  return d.headers['location']!
}

function sameOrigin(value: string, what: string) {
  assert.equal(new URL(value, ORIGIN).origin, ORIGIN, `${what}: Location ${value}`)
  assert.ok(/^\/(?![/\\])/.test(value), `${what}: Location ${value} is not a single-slash path`)
}

describe('a Location built from rd stays on the origin', () => {
  test('sign_out?rd=/.//evil.example (no session: the Location is rd itself)', async () => {
    const g = await setup()
    for (const rd of HOSTILE) {
      const value = location(
        await g.gatehouse.handle(facts(`/oauth2/sign_out?rd=${encodeURIComponent(rd)}`, { headers: NAV })),
      )
      sameOrigin(value, rd)
      assert.equal(value, '/')
    }
    // A raw, unencoded rd arrives the same way.
    sameOrigin(
      location(await g.gatehouse.handle(facts('/oauth2/sign_out?rd=/.//evil.example', { headers: NAV }))),
      'raw',
    )
  })

  test('refresh?rd=/..//x after a refresh (a navigation is sent back to rd)', async () => {
    const g = await setup()
    const { cookie, jar } = await signIn(g)
    let header = cookie
    for (const rd of HOSTILE) {
      g.clock.advance(3600 * 1000)
      const d = await g.gatehouse.handle(
        facts(`/oauth2/refresh?rd=${encodeURIComponent(rd)}`, { headers: { ...NAV, cookie: header } }),
      )
      const value = location(d)
      sameOrigin(value, rd)
      assert.equal(value, '/')
      if (d.kind === 'respond') header = cookieHeaderFrom(d.setCookies, jar)
    }
  })

  test('sign_in?rd= and the callback: the path stored for after sign-in is checked after resolving', async () => {
    const g = await setup()
    const start = await g.gatehouse.handle(facts('/oauth2/sign_in?rd=/.//evil.example', { headers: NAV }))
    const idp = new URL(location(start))
    const state = idp.searchParams.get('state')!
    assert.ok(start.kind === 'respond')
    const stateCookie = cookieHeaderFrom(start.kind === 'respond' ? start.setCookies : [])
    const cb = await g.gatehouse.handle(
      facts(`/oauth2/callback?code=abc&state=${state}`, { headers: { ...NAV, cookie: stateCookie } }),
    )
    const value = location(cb)
    sameOrigin(value, 'callback')
    assert.equal(value, '/')
  })
})
