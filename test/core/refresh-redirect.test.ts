/**
 * Unit tests of `refreshMode: 'redirect'` (seed 004's check_auth on Lambda@Edge, which holds no client
 * secret): check-auth never calls the provider; it bounces navigations to `<prefix>/refresh`, serves API
 * calls while the access token lives and then answers 401 `refresh_required`. The refresh endpoint
 * refreshes, and when the provider is unreachable sends the browser back with a short sealed
 * `-refresh-wait` cookie so that it is not bounced again at once (no redirect loop).
 *
 * Timeline of a session from `signIn`: signed in at START, access token expires at START + 3600 s,
 * refresh is due from START + 3000 s (refresh_before 600 s).
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ProviderRejectedError, ProviderUnavailableError } from '../../src/core/errors.ts'
import type { GatehouseDeps, GatehouseOptions } from '../../src/core/gatehouse.ts'
import { createSessionCodec } from '../../src/core/session-codec.ts'
import { API, cookieHeaderFrom, facts, NAV, setup, signIn } from './fixtures.ts'

type Setup = Awaited<ReturnType<typeof setup>>
type Decision = Awaited<ReturnType<Setup['gatehouse']['handle']>>

const SESSION = '__Host-gatehouse'
const WAIT = '__Host-gatehouse-refresh-wait'
const ACCESS_TTL = 3600
const REFRESH_BEFORE = 600

function respond(d: Decision) {
  assert.equal(d.kind, 'respond', `expected an answer, got ${JSON.stringify(d)}`)
  if (d.kind !== 'respond') throw new Error('unreachable')
  return d
}
function allowed(d: Decision) {
  assert.equal(d.kind, 'allow', `expected allow, got ${JSON.stringify(d)}`)
  if (d.kind !== 'allow') throw new Error('unreachable')
  return d
}

/** A Set-Cookie line that sets `name` to a value (not a deletion). */
const sets = (setCookies: string[], name: string) =>
  setCookies.filter((c) => c.startsWith(`${name}=`) && !/Max-Age=0$/.test(c))
/** The exact Set-Cookie line that deletes `name`. */
const clearing = (name: string) => `${name}=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0`
const WAIT_SET =
  /^__Host-gatehouse-refresh-wait=[\w-]+\.[\w-]*\.[\w-]+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=30$/

function redirectMode(overrides: Partial<GatehouseOptions> = {}, deps: Partial<GatehouseDeps> = {}) {
  return setup({ refreshMode: 'redirect', ...overrides }, undefined, deps)
}

function unreachable(g: Setup) {
  g.provider.state.refresh = async () => {
    throw new ProviderUnavailableError('connect ECONNREFUSED')
  }
}

/** Follow a 302 to the refresh endpoint as the browser would. */
async function follow(g: Setup, d: Decision, cookie: string) {
  const location = respond(d).headers['location']!
  assert.ok(location.startsWith('/oauth2/refresh?rd='), `not a refresh redirect: ${location}`)
  return respond(await g.gatehouse.handle(facts(location, { headers: { ...NAV, cookie } })))
}

describe('redirect mode: check-auth', () => {
  test('a token not yet due is served as it is: no redirect, no refresh, no cookie', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL - REFRESH_BEFORE - 1) * 1000)
    for (const headers of [NAV, API]) {
      const d = allowed(await g.gatehouse.handle(facts('/docs', { headers: { ...headers, cookie } })))
      assert.equal(d.identity?.sub, 'user-1')
      assert.equal(d.upstreamHeaders['x-auth-request-user'], 'user-1')
      assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], undefined)
      assert.deepEqual(d.setCookies, [])
    }
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('a due navigation gets a 302 to the refresh endpoint with its same-origin path and query as rd', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL - REFRESH_BEFORE) * 1000)
    const d = respond(await g.gatehouse.handle(facts('/docs?a=1&b=%2Fx', { headers: { ...NAV, cookie } })))
    assert.equal(d.status, 302)
    assert.equal(d.code, 'refresh_required')
    assert.equal(d.headers['cache-control'], 'no-store')
    assert.equal(d.headers['location'], '/oauth2/refresh?rd=%2Fdocs%3Fa%3D1%26b%3D%252Fx')
    const location = new URL(d.headers['location']!, 'https://app.example.com')
    assert.equal(location.origin, 'https://app.example.com')
    assert.equal(location.pathname, '/oauth2/refresh')
    assert.equal(location.searchParams.get('rd'), '/docs?a=1&b=%2Fx', 'query preserved')
    assert.deepEqual(d.setCookies, [], 'the session is kept for the refresh endpoint')
    assert.equal(g.provider.calls.refresh, 0, 'check-auth never calls the provider')

    // A protocol-relative request path is normalised to a path on this origin before it becomes rd.
    const slashes = respond(
      await g.gatehouse.handle(facts('//evil.example/x', { headers: { ...NAV, cookie } })),
    )
    assert.equal(slashes.headers['location'], '/oauth2/refresh?rd=%2Fevil.example%2Fx')

    // The refresh endpoint lives under the configured prefix.
    const p = await redirectMode({ prefix: '/auth' })
    const c2 = await signInAt(p, '/auth')
    p.clock.advance((ACCESS_TTL - REFRESH_BEFORE) * 1000)
    const prefixed = respond(await p.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: c2 } })))
    assert.equal(prefixed.headers['location'], '/auth/refresh?rd=%2Fdocs')
  })

  test('a due API call (or a non-navigation from a browser) is served while the access token lives', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL - 1) * 1000)
    const requests = [
      facts('/api/items', { headers: { ...API, cookie } }),
      facts('/api/items', { headers: { accept: 'text/html', 'sec-fetch-mode': 'cors', cookie } }),
      facts('/form', { method: 'POST', headers: { accept: 'text/html', cookie } }),
    ]
    for (const f of requests) {
      const d = allowed(await g.gatehouse.handle(f))
      assert.equal(d.upstreamHeaders['x-auth-request-user'], 'user-1')
      assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], undefined)
      assert.deepEqual(d.setCookies, [])
    }
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('an API call with an expired access token gets 401 refresh_required with a Bearer challenge', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance(ACCESS_TTL * 1000)
    const d = respond(await g.gatehouse.handle(facts('/api/items', { headers: { ...API, cookie } })))
    assert.equal(d.status, 401)
    assert.equal(d.code, 'refresh_required')
    assert.equal(
      d.headers['www-authenticate'],
      'Bearer realm="gatehouse", error="invalid_token", error_description="The access token expired; refresh the session at /oauth2/refresh"',
    )
    assert.equal(d.headers['content-type'], 'application/json; charset=utf-8')
    assert.deepEqual(JSON.parse(d.body), {
      error: 'refresh_required',
      error_description: 'The access token expired; refresh the session at /oauth2/refresh',
    })
    assert.deepEqual(d.setCookies, [], 'the session is not cleared: the client can still refresh it')
    // A navigation at the same moment is bounced to refresh, not answered 401.
    const nav = respond(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })))
    assert.equal(nav.status, 302)
    assert.equal(nav.headers['location'], '/oauth2/refresh?rd=%2Fdocs')
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('an anonymous route is never bounced, even with a due session', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance(ACCESS_TTL * 1000)
    const d = allowed(await g.gatehouse.handle(facts('/public/logo.png', { headers: { ...NAV, cookie } })))
    assert.equal(d.upstreamHeaders['x-auth-request-user'], 'user-1')
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('a session without a refresh token is never sent to refresh', async () => {
    const g = await redirectMode()
    g.provider.state.exchange = async () => ({
      accessToken: 'access-0',
      accessTokenExpiresAt: Math.floor(g.clock.now() / 1000) + ACCESS_TTL,
      idToken: 'id-0',
      claims: g.provider.state.claims,
    })
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL - 100) * 1000)
    allowed(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })))
    assert.equal(g.provider.calls.refresh, 0)
  })
})

describe('redirect mode: the refresh endpoint', () => {
  test('a bounced navigation is refreshed once and sent back to rd with the new session cookie', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    g.clock.advance((ACCESS_TTL - REFRESH_BEFORE + 1) * 1000)
    const bounce = await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie } }))
    const d = await follow(g, bounce, cookie)
    assert.equal(d.status, 302)
    assert.equal(d.code, 'refreshed')
    assert.equal(d.headers['location'], '/docs?a=1')
    assert.equal(d.headers['cache-control'], 'no-store')
    assert.equal(sets(d.setCookies, SESSION).length, 1, 'a new session cookie')
    assert.match(sets(d.setCookies, SESSION)[0]!, /; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=43200$/)
    assert.ok(!d.setCookies.some((c) => c.startsWith(`${WAIT}=`)), 'no wait cookie to clear')
    assert.equal(g.provider.calls.refresh, 1)

    // Back at rd with the new cookie: served, no second bounce, no second refresh.
    const next = cookieHeaderFrom(d.setCookies, jar)
    assert.notEqual(next, cookie)
    const back = allowed(await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie: next } })))
    assert.equal(back.path, '/docs?a=1')
    assert.deepEqual(back.setCookies, [])
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('rd is only ever a same-origin path: anything else goes to /', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL - 100) * 1000)
    const cases: Array<[string, string]> = [
      ['', '/'],
      ['?rd=https%3A%2F%2Fevil.example%2F', '/'],
      ['?rd=%2F%2Fevil.example%2F', '/'],
      ['?rd=%2F%5Cevil.example', '/'],
      ['?rd=%2F%252F%252Fevil.example', '/'],
      ['?rd=javascript%3Aalert(1)', '/'],
      ['?rd=%2Fok%3Fq%3D1', '/ok?q=1'],
    ]
    for (const [query, location] of cases) {
      const d = respond(
        await g.gatehouse.handle(facts(`/oauth2/refresh${query}`, { headers: { ...NAV, cookie } })),
      )
      assert.equal(d.status, 302, query)
      assert.equal(d.headers['location'], location, query)
    }
    // The old cookie presented again within a minute reuses the first outcome.
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('a POST or API call to the refresh endpoint gets JSON, never a redirect', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL + 5) * 1000)
    const requests = [
      facts('/oauth2/refresh?rd=%2Fdocs', { method: 'POST', headers: { ...API, cookie } }),
      facts('/oauth2/refresh?rd=%2Fdocs', { method: 'POST', headers: { accept: 'text/html', cookie } }),
      facts('/oauth2/refresh?rd=%2Fdocs', { headers: { ...API, 'sec-fetch-mode': 'cors', cookie } }),
    ]
    for (const f of requests) {
      const d = respond(await g.gatehouse.handle(f))
      assert.equal(d.status, 200, f.method)
      assert.equal(d.code, 'refreshed')
      assert.equal(d.headers['location'], undefined)
      assert.equal(d.headers['content-type'], 'application/json; charset=utf-8')
      const body = JSON.parse(d.body)
      assert.equal(body.expires_at, Math.floor(g.clock.now() / 1000) + 12 * 3600)
      assert.equal(sets(d.setCookies, SESSION).length, 1)
    }
    assert.equal(g.provider.calls.refresh, 1, 'one refresh for the one old cookie')
    // The refresh endpoint answers GET, HEAD and POST only.
    const put = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'PUT', headers: { ...API, cookie } })),
    )
    assert.equal(put.status, 404)
  })

  test('without a session: a navigation starts sign-in keeping rd, a script gets 401', async () => {
    const g = await redirectMode()
    const nav = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh?rd=%2Fhere%3Fx%3D1', { headers: NAV })),
    )
    assert.equal(nav.status, 302)
    assert.equal(nav.code, 'sign_in')
    const location = new URL(nav.headers['location']!)
    assert.equal(location.origin, 'https://idp.example')
    // The sign-in attempt returns to rd.
    const stateCookie = cookieHeaderFrom(nav.setCookies)
    const cb = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?code=abc&state=${location.searchParams.get('state')}`, {
          headers: { ...NAV, cookie: stateCookie },
        }),
      ),
    )
    assert.equal(cb.headers['location'], '/here?x=1')

    const api = respond(await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: API })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'missing_credentials')
    assert.equal(api.headers['www-authenticate'], 'Bearer realm="gatehouse"')

    // A cookie that is not a session: cleared on the way to sign-in.
    const garbled = respond(
      await g.gatehouse.handle(
        facts('/oauth2/refresh?rd=%2Fhere', { headers: { ...NAV, cookie: `${SESSION}=garbage` } }),
      ),
    )
    assert.equal(garbled.code, 'sign_in')
    assert.ok(garbled.setCookies.includes(clearing(SESSION)))
    assert.equal(g.provider.calls.refresh, 0)
  })
})

describe('redirect mode: provider unreachable', () => {
  test('the browser goes back with a 30 s wait cookie; served degraded meanwhile; bounced again after 30 s', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000) // expired, inside the one-hour outage grace
    const bounce = respond(await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie } })))
    assert.equal(bounce.headers['location'], '/oauth2/refresh?rd=%2Fdocs%3Fa%3D1')

    const deferred = await follow(g, bounce, cookie)
    assert.equal(deferred.status, 302)
    assert.equal(deferred.code, 'refresh_deferred')
    assert.equal(deferred.headers['location'], '/docs?a=1')
    assert.equal(deferred.setCookies.length, 1, 'only the wait cookie: the session is kept')
    assert.match(deferred.setCookies[0]!, WAIT_SET)
    assert.equal(g.provider.calls.refresh, 1)
    // Sealed: an opaque token whose deadline is 30 s from now.
    const sealed = deferred.setCookies[0]!.split(';')[0]!.slice(WAIT.length + 1)
    assert.deepEqual(
      { w: (await g.codec.unseal(sealed))?.['w'] },
      { w: Math.floor(g.clock.now() / 1000) + 30 },
    )
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    assert.ok(withWait.includes(`${WAIT}=`))

    // Within the 30 s: navigations and API calls are served, marked degraded, with no further redirect.
    for (const step of [0, 15_000, 14_999]) {
      g.clock.advance(step)
      for (const headers of [NAV, API]) {
        const d = allowed(
          await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...headers, cookie: withWait } })),
        )
        assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], 'idp-unavailable')
        assert.equal(d.upstreamHeaders['x-auth-request-user'], 'user-1')
        assert.deepEqual(d.setCookies, [])
      }
    }
    assert.equal(g.provider.calls.refresh, 1, 'no provider call while waiting')

    // 30 s after the deferral: bounced again (one round trip every 30 s, not a loop).
    g.clock.advance(1)
    const again = respond(
      await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie: withWait } })),
    )
    assert.equal(again.status, 302)
    assert.equal(again.headers['location'], '/oauth2/refresh?rd=%2Fdocs%3Fa%3D1')
    const api = respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: withWait } })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'refresh_required')

    // Still down: the refresh endpoint tries the provider again (its backoff has passed) and defers again.
    const second = await follow(g, again, withWait)
    assert.equal(second.code, 'refresh_deferred')
    assert.match(second.setCookies[0]!, WAIT_SET)
    assert.equal(g.provider.calls.refresh, 2)
  })

  test('within the wait a due token that still lives is served without the degraded marker', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL - 100) * 1000)
    const deferred = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })),
      cookie,
    )
    assert.equal(deferred.code, 'refresh_deferred')
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    const d = allowed(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: withWait } })))
    assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], undefined)
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('recovery: a successful refresh clears the wait cookie and the session is no longer degraded', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000)
    const deferred = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })),
      cookie,
    )
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    g.provider.state.refresh = undefined // the provider is back
    g.clock.advance(30_000)
    const refreshed = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: withWait } })),
      withWait,
    )
    assert.equal(refreshed.status, 302)
    assert.equal(refreshed.code, 'refreshed')
    assert.equal(refreshed.headers['location'], '/docs')
    assert.equal(sets(refreshed.setCookies, SESSION).length, 1)
    assert.ok(refreshed.setCookies.includes(clearing(WAIT)), 'the wait cookie is cleared')
    assert.equal(g.provider.calls.refresh, 2)
    const after = cookieHeaderFrom(refreshed.setCookies, jar)
    assert.ok(!after.includes(`${WAIT}=`))
    const d = allowed(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: after } })))
    assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], undefined)
    assert.deepEqual(d.setCookies, [])
  })

  test('two tabs refreshing with the same old cookie each get the wait cookie cleared once', async () => {
    // The outcome of a refresh is shared by every request presenting the same old cookie within a
    // minute; the refresh endpoint must not add its wait-cookie deletion to that shared outcome.
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000)
    const deferred = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })),
      cookie,
    )
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    g.provider.state.refresh = undefined
    g.clock.advance(30_000)
    const tab = () =>
      g.gatehouse.handle(facts('/oauth2/refresh?rd=%2Fdocs', { headers: { ...NAV, cookie: withWait } }))
    const first = [...respond(await tab()).setCookies]
    const second = [...respond(await tab()).setCookies]
    assert.equal(g.provider.calls.refresh, 2, 'one refresh after the outage, shared by both tabs')
    assert.deepEqual(
      first.filter((c) => c.startsWith(`${WAIT}=`)),
      [clearing(WAIT)],
    )
    assert.deepEqual(second, first, 'no duplicated Set-Cookie lines')
    // A script holding the old cookie but no wait cookie is not told to delete one.
    const script = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(script.status, 200)
    assert.ok(!script.setCookies.some((c) => c.startsWith(`${WAIT}=`)), JSON.stringify(script.setCookies))
  })

  test('the wait only holds while the outage grace applies: past it the session ends', async () => {
    const g = await redirectMode({
      session: {
        ttlSeconds: 12 * 3600,
        maxTtlSeconds: 7 * 86400,
        refreshBeforeSeconds: REFRESH_BEFORE,
        outageGraceSeconds: 600,
      },
    })
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 590) * 1000) // grace ends at ACCESS_TTL + 600
    const deferred = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })),
      cookie,
    )
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    const inGrace = allowed(
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: withWait } })),
    )
    assert.equal(inGrace.upstreamHeaders['x-gatehouse-degraded'], 'idp-unavailable')

    g.clock.advance(10_000) // still waiting, but the grace is over
    const nav = respond(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: withWait } })))
    assert.equal(nav.status, 302)
    assert.equal(nav.code, 'sign_in')
    assert.ok(nav.headers['location']!.startsWith('https://idp.example/authorize'))
    assert.ok(nav.setCookies.includes(clearing(SESSION)), 'the session is cleared')
    const api = respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: withWait } })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'session_expired')
    assert.match(api.headers['www-authenticate']!, /error="invalid_token"/)
    assert.ok(api.setCookies.includes(clearing(SESSION)))
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('a garbled, foreign or stale wait cookie does not stop the redirect', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000)
    const now = Math.floor(g.clock.now() / 1000)
    const foreign = await createSessionCodec({
      secrets: ['another-secret-that-is-long-enough-0123456789'],
      cookieName: SESSION,
      secure: true,
      clock: g.clock,
    })
    const values = [
      'garbage',
      await foreign.seal({ w: now + 30 }, now + 30),
      await g.codec.seal({ w: now }, now + 30), // its own deadline has passed
      await g.codec.seal({ w: String(now + 30) }, now + 30),
      await g.codec.seal({}, now + 30),
    ]
    for (const value of values) {
      const d = respond(
        await g.gatehouse.handle(
          facts('/docs', { headers: { ...NAV, cookie: `${cookie}; ${WAIT}=${value}` } }),
        ),
      )
      assert.equal(d.status, 302, value)
      assert.equal(d.headers['location'], '/oauth2/refresh?rd=%2Fdocs', value)
    }
  })

  test('a script refreshing while the provider is unreachable gets 503, no wait cookie', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000)
    const d = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(d.status, 503)
    assert.equal(d.code, 'idp_unavailable')
    assert.equal(d.headers['retry-after'], '30')
    assert.deepEqual(d.setCookies, [])
    assert.equal(g.provider.calls.refresh, 1)
  })
})

describe('redirect mode: provider refuses', () => {
  // Changed with the two-tab race fix: a refused refresh used to clear the session on the first
  // refusal, which could overwrite the fresh session another tab's refresh had just set (at the edge the
  // two tabs reach different instances, and with rotation the loser gets invalid_grant). Now the first
  // refusal goes back to rd once, marked; only the same refused session coming back is cleared.
  test('invalid_grant: back to rd once, then (same refused session) cleared and sent to sign in, returning to rd', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    g.provider.state.refresh = async () => {
      throw new ProviderRejectedError('invalid_grant', 'grant revoked')
    }
    g.clock.advance((ACCESS_TTL - 100) * 1000)
    const bounce = await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie } }))
    const once = await follow(g, bounce, cookie)
    assert.equal(once.status, 302)
    assert.equal(once.code, 'refresh_refused')
    assert.equal(once.headers['location'], '/docs?a=1')
    assert.equal(once.setCookies.length, 1, 'only the marker: the session cookie is not touched')
    assert.match(once.setCookies[0]!, WAIT_SET)
    const sealed = once.setCookies[0]!.split(';')[0]!.slice(WAIT.length + 1)
    assert.equal((await g.codec.unseal(sealed))?.['w'], undefined, 'not a wait: check-auth bounces again')
    assert.equal(g.provider.calls.refresh, 1)

    // Back at rd with the same refused session: bounced again, and this time signed out.
    const marked = cookieHeaderFrom(once.setCookies, jar)
    const again = await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie: marked } }))
    const d = await follow(g, again, marked)
    assert.equal(d.status, 302)
    assert.equal(d.code, 'sign_in')
    const location = new URL(d.headers['location']!)
    assert.equal(location.origin + location.pathname, 'https://idp.example/authorize')
    assert.ok(d.setCookies.includes(clearing(SESSION)), 'the session is cleared')
    assert.ok(d.setCookies.includes(clearing(WAIT)), 'the marker is cleared')
    assert.equal(sets(d.setCookies, WAIT).length, 0)
    // The same instance remembers the refusal (no second provider call); another would ask again.
    assert.equal(g.provider.calls.refresh, 1)
    // The new sign-in returns to where the browser was going.
    const cb = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?code=abc&state=${location.searchParams.get('state')}`, {
          headers: { ...NAV, cookie: cookieHeaderFrom(d.setCookies) },
        }),
      ),
    )
    assert.equal(cb.headers['location'], '/docs?a=1')

    // A script with the old cookie: 401 session_expired, cleared at once, without asking the provider again.
    const api = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(api.status, 401)
    assert.equal(api.code, 'session_expired')
    assert.match(api.headers['www-authenticate']!, /error="invalid_token"/)
    assert.ok(api.setCookies.includes(clearing(SESSION)))
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('two tabs on two instances, rotation: the refused one does not clear the session the other refreshed', async () => {
    // Instance A and B share the provider, the clock and the session secret, not their memory: the
    // Lambda@Edge case, where two tabs bounced at once land on different instances.
    const a = await redirectMode()
    const b = await redirectMode({}, { clock: a.clock, oidc: a.provider.port, codec: a.codec })
    const { cookie, jar } = await signIn(a)
    // Rotation without a grace period: each refresh token works once.
    const used = new Set<string>()
    const refresh = a.provider.port.refresh.bind(a.provider.port)
    let asked = 0
    a.provider.port.refresh = async (rt) => {
      asked++
      if (used.has(rt)) throw new ProviderRejectedError('invalid_grant', 'refresh token already used')
      used.add(rt)
      return refresh(rt)
    }
    a.clock.advance((ACCESS_TTL - REFRESH_BEFORE + 1) * 1000)
    const [one, two] = await Promise.all([
      a.gatehouse.handle(facts('/oauth2/refresh?rd=%2Fone', { headers: { ...NAV, cookie } })),
      b.gatehouse.handle(facts('/oauth2/refresh?rd=%2Ftwo', { headers: { ...NAV, cookie } })),
    ]).then((ds) => ds.map(respond))
    assert.equal(one!.code, 'refreshed')
    assert.equal(two!.code, 'refresh_refused')
    assert.equal(two!.headers['location'], '/two', 'back to where the tab was going')
    assert.ok(!two!.setCookies.some((c) => c.startsWith(`${SESSION}=`)), 'the session cookie is not touched')

    // The loser's answer arrives last (the harmful order before the fix): the winner's session holds.
    for (const order of [
      [one!, two!],
      [two!, one!],
    ]) {
      const browser = new Map(jar)
      for (const r of order) cookieHeaderFrom(r.setCookies, browser)
      const now = cookieHeaderFrom([], browser)
      assert.equal(now.includes(`${SESSION}=`), true, 'a session cookie is kept')
      assert.notEqual(now, cookie)
      const back = allowed(await b.gatehouse.handle(facts('/two', { headers: { ...NAV, cookie: now } })))
      assert.equal(back.identity?.sub, 'user-1')
      assert.deepEqual(back.setCookies, [])
    }
    assert.equal(asked, 2, 'one refresh each, no more')
  })
})

describe('redirect mode: cookies', () => {
  test('the wait cookie (and every Gatehouse cookie) is stripped from what goes upstream', async () => {
    const g = await redirectMode()
    const { cookie, jar } = await signIn(g)
    unreachable(g)
    g.clock.advance((ACCESS_TTL + 10) * 1000)
    const deferred = await follow(
      g,
      await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie } })),
      cookie,
    )
    const withWait = cookieHeaderFrom(deferred.setCookies, jar)
    assert.ok(withWait.includes(`${WAIT}=`) && withWait.includes(`${SESSION}=`))
    const header = `theme=dark; ${withWait}; lang=en`
    const d = allowed(await g.gatehouse.handle(facts('/docs', { headers: { ...NAV, cookie: header } })))
    assert.equal(d.upstreamHeaders['x-gatehouse-degraded'], 'idp-unavailable')
    assert.equal(d.upstreamCookie, 'theme=dark; lang=en')
    // The same on an anonymous route, and when the wait cookie is the only one left.
    const anon = allowed(
      await g.gatehouse.handle(facts('/public/x', { headers: { ...NAV, cookie: header } })),
    )
    assert.equal(anon.upstreamCookie, 'theme=dark; lang=en')
    const only = allowed(
      await g.gatehouse.handle(facts('/public/x', { headers: { ...NAV, cookie: `${WAIT}=x` } })),
    )
    assert.equal(only.upstreamCookie, undefined)
  })

  test('sign-out clears the wait cookie when present, and only then', async () => {
    const g = await redirectMode()
    const { cookie } = await signIn(g)
    const now = Math.floor(g.clock.now() / 1000)
    const wait = `${WAIT}=${await g.codec.seal({ w: now + 30 }, now + 30)}`
    const out = respond(
      await g.gatehouse.handle(
        facts('/oauth2/sign_out', { headers: { ...NAV, cookie: `${cookie}; ${wait}` } }),
      ),
    )
    assert.equal(out.status, 302)
    assert.ok(out.setCookies.includes(clearing(SESSION)))
    assert.ok(out.setCookies.includes(clearing(WAIT)))
    const plain = respond(
      await g.gatehouse.handle(facts('/oauth2/sign_out', { headers: { ...NAV, cookie } })),
    )
    assert.ok(!plain.setCookies.some((c) => c.startsWith(`${WAIT}=`)))
  })
})

describe('inline mode (the default) is unchanged', () => {
  for (const refreshMode of [undefined, 'inline'] as const) {
    const label = refreshMode ?? 'default'
    test(`${label}: a due request is refreshed within the request, never bounced`, async () => {
      const g = await setup(refreshMode === undefined ? {} : { refreshMode })
      const { cookie } = await signIn(g)
      g.clock.advance((ACCESS_TTL + 5) * 1000) // expired
      const nav = allowed(await g.gatehouse.handle(facts('/docs?a=1', { headers: { ...NAV, cookie } })))
      assert.equal(sets(nav.setCookies, SESSION).length, 1, 'the new session cookie comes with the page')
      assert.equal(nav.upstreamHeaders['x-gatehouse-degraded'], undefined)
      assert.equal(g.provider.calls.refresh, 1)
      // An API call still carrying the old cookie: served with the same refresh's result, no 401.
      g.clock.advance(5_000)
      const api = allowed(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
      assert.equal(sets(api.setCookies, SESSION).length, 1)
      assert.equal(g.provider.calls.refresh, 1)
    })

    test(`${label}: the refresh endpoint never mints a wait cookie (503 while the provider is down)`, async () => {
      const g = await setup(refreshMode === undefined ? {} : { refreshMode })
      const { cookie } = await signIn(g)
      unreachable(g)
      g.clock.advance((ACCESS_TTL - 100) * 1000)
      const d = respond(
        await g.gatehouse.handle(facts('/oauth2/refresh?rd=%2Fdocs', { headers: { ...NAV, cookie } })),
      )
      assert.equal(d.status, 503)
      assert.equal(d.code, 'idp_unavailable')
      assert.deepEqual(d.setCookies, [])
    })
  }
})

/** Sign in against a Gatehouse whose endpoints live under another prefix. */
async function signInAt(g: Setup, prefix: string): Promise<string> {
  const first = respond(await g.gatehouse.handle(facts('/dashboard', { headers: NAV })))
  const state = new URL(first.headers['location']!).searchParams.get('state')!
  const jar = new Map<string, string>()
  const cb = respond(
    await g.gatehouse.handle(
      facts(`${prefix}/callback?code=abc&state=${state}`, {
        headers: { ...NAV, cookie: cookieHeaderFrom(first.setCookies, jar) },
      }),
    ),
  )
  return cookieHeaderFrom(cb.setCookies, jar)
}
