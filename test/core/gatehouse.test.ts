import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  ProviderBusyError,
  ProviderRejectedError,
  ProviderResponseError,
  ProviderUnavailableError,
} from '../../src/core/errors.ts'
import type { RateBucket, RateLimiter } from '../../src/core/ports.ts'
import { API, cookieHeaderFrom, facts, NAV, setup, signIn } from './fixtures.ts'

function respond(d: Awaited<ReturnType<Awaited<ReturnType<typeof setup>>['gatehouse']['handle']>>) {
  assert.equal(d.kind, 'respond', `expected an answer, got ${JSON.stringify(d)}`)
  if (d.kind !== 'respond') throw new Error('unreachable')
  return d
}
function allowed(d: Awaited<ReturnType<Awaited<ReturnType<typeof setup>>['gatehouse']['handle']>>) {
  assert.equal(d.kind, 'allow', `expected allow, got ${JSON.stringify(d)}`)
  if (d.kind !== 'allow') throw new Error('unreachable')
  return d
}

describe('check_auth without a session', () => {
  test('a browser navigation is redirected to the provider with its own state cookie', async () => {
    const g = await setup()
    const d = respond(await g.gatehouse.handle(facts('/dashboard?x=1', { headers: NAV })))
    assert.equal(d.status, 302)
    assert.equal(d.headers['cache-control'], 'no-store')
    const location = new URL(d.headers['location']!)
    assert.equal(location.origin, 'https://idp.example')
    const state = location.searchParams.get('state')!
    assert.match(state, /^[A-Za-z0-9_-]{43}$/)
    assert.equal(d.setCookies.length, 2, 'the attempt, and the loop guard')
    assert.match(
      d.setCookies[1]!,
      /^__Host-gatehouse-loop=1\.\d+; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=60$/,
    )
    const cookie = d.setCookies[0]!
    assert.ok(cookie.startsWith(`__Host-gatehouse-state-${state.slice(0, 16)}=`))
    assert.match(cookie, /; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=600$/)
    assert.equal(g.provider.calls.authorize, 1)
  })

  test('two attempts get two states and two cookies (parallel tabs do not clash)', async () => {
    const g = await setup()
    const a = respond(await g.gatehouse.handle(facts('/a', { headers: NAV })))
    const b = respond(await g.gatehouse.handle(facts('/b', { headers: NAV })))
    assert.notEqual(
      new URL(a.headers['location']!).searchParams.get('state'),
      new URL(b.headers['location']!).searchParams.get('state'),
    )
    assert.notEqual(a.setCookies[0]!.split('=')[0], b.setCookies[0]!.split('=')[0])
  })

  test('an API call gets 401 JSON with a Bearer challenge and no error code (RFC 6750 §3.1)', async () => {
    const g = await setup()
    const d = respond(await g.gatehouse.handle(facts('/api/items', { headers: API })))
    assert.equal(d.status, 401)
    assert.equal(d.headers['www-authenticate'], 'Bearer realm="gatehouse"')
    assert.deepEqual(JSON.parse(d.body), {
      error: 'missing_credentials',
      error_description: 'Sign-in required',
    })
    assert.equal(g.provider.calls.authorize, 0)
  })

  test('XHR and POST never get a redirect', async () => {
    const g = await setup()
    const xhr = respond(
      await g.gatehouse.handle(
        facts('/x', { headers: { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' } }),
      ),
    )
    assert.equal(xhr.status, 401)
    const post = respond(
      await g.gatehouse.handle(facts('/x', { method: 'POST', headers: { accept: 'text/html' } })),
    )
    assert.equal(post.status, 401)
    const fetchMode = respond(
      await g.gatehouse.handle(facts('/x', { headers: { accept: 'text/html', 'sec-fetch-mode': 'cors' } })),
    )
    assert.equal(fetchMode.status, 401)
  })

  test('anonymous routes pass without identity and without redirect', async () => {
    const g = await setup()
    const d = allowed(await g.gatehouse.handle(facts('/public/logo.png', { headers: NAV })))
    assert.equal(d.identity, undefined)
    assert.deepEqual(d.upstreamHeaders, {})
  })

  test('loop guard: the sixth sign-in start within a minute gets a clear page, not another redirect', async () => {
    const g = await setup()
    const jar = new Map<string, string>()
    for (let i = 1; i <= 5; i++) {
      const d = respond(
        await g.gatehouse.handle(facts(`/p${i}`, { headers: { ...NAV, cookie: cookieHeaderFrom([], jar) } })),
      )
      assert.equal(d.status, 302, `attempt ${i}`)
      cookieHeaderFrom(d.setCookies, jar)
      g.clock.advance(5_000)
    }
    const stop = respond(
      await g.gatehouse.handle(facts('/p6', { headers: { ...NAV, cookie: cookieHeaderFrom([], jar) } })),
    )
    assert.equal(stop.status, 429)
    assert.equal(stop.code, 'sign_in_loop')
    assert.equal(stop.headers['retry-after'], '60')
    assert.match(stop.body, /cookies are allowed/)
    assert.equal(g.provider.calls.authorize, 5, 'the sixth never reached the provider')
    // A minute later the window has passed.
    g.clock.advance(60_000)
    const again = respond(
      await g.gatehouse.handle(facts('/p7', { headers: { ...NAV, cookie: cookieHeaderFrom([], jar) } })),
    )
    assert.equal(again.status, 302)
  })

  test('provider down at sign-in: 503 page with Retry-After, no redirect', async () => {
    const g = await setup()
    g.provider.port.authorizationUrl = async () => {
      throw new ProviderUnavailableError('discovery: timed out')
    }
    const d = respond(await g.gatehouse.handle(facts('/dashboard', { headers: NAV })))
    assert.equal(d.status, 503)
    assert.equal(d.code, 'idp_unavailable')
    assert.equal(d.headers['retry-after'], '30')
    assert.match(d.body, /sign-in service is unavailable/)
    assert.equal(d.setCookies.length, 0)
  })
  test("Gatehouse's own cap on provider calls is full: 503 idp_busy with the cap's short Retry-After", async () => {
    const g = await setup()
    g.provider.port.authorizationUrl = async () => {
      throw new ProviderBusyError('provider calls capped: 16 in flight and 64 waiting', 2)
    }
    const d = respond(await g.gatehouse.handle(facts('/oauth2/sign_in?rd=/dashboard', { headers: API })))
    assert.equal(d.status, 503)
    assert.equal(d.code, 'idp_busy')
    assert.equal(d.headers['retry-after'], '2')
    assert.deepEqual(JSON.parse(d.body), {
      error: 'idp_busy',
      error_description: 'Too many sign-ins are in progress. Try again in a few seconds.',
    })
    assert.equal(d.setCookies.length, 0)
  })
})

describe('parse_auth (callback)', () => {
  test('a good callback sets the session and returns to the original path', async () => {
    const g = await setup()
    const { callback, cookie } = await signIn(g, '/dashboard?tab=2')
    assert.equal(callback.headers['location'], '/dashboard?tab=2')
    assert.ok(
      callback.setCookies.some((c) => /^__Host-gatehouse-state-[^=]+=; .*Max-Age=0/.test(c)),
      'state cookie cleared',
    )
    const session = callback.setCookies.find((c) => c.startsWith('__Host-gatehouse='))!
    assert.match(session, /HttpOnly; SameSite=Lax; Secure; Max-Age=43200$/)
    const d = allowed(await g.gatehouse.handle(facts('/dashboard', { headers: { ...NAV, cookie } })))
    assert.deepEqual(d.upstreamHeaders, {
      'x-auth-request-user': 'user-1',
      'x-auth-request-email': 'alice@example.com',
      'x-auth-request-groups': 'staff',
      'x-auth-request-preferred-username': 'alice',
    })
    assert.equal(d.upstreamCookie, undefined, 'Gatehouse cookies are not forwarded')
  })

  test('the nonce and PKCE verifier from the attempt reach the exchange', async () => {
    const g = await setup()
    const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const loc = new URL(first.headers['location']!)
    await g.gatehouse.handle(
      facts(`/oauth2/callback?code=c&state=${loc.searchParams.get('state')}`, {
        headers: { cookie: cookieHeaderFrom(first.setCookies) },
      }),
    )
    const expected = g.provider.lastExpected()!
    assert.equal(expected.nonce, loc.searchParams.get('nonce'))
    const challenge = Buffer.from(
      await crypto.subtle.digest('SHA-256', new TextEncoder().encode(expected.codeVerifier)),
    ).toString('base64url')
    assert.equal(challenge, loc.searchParams.get('code_challenge'))
  })

  test('a replayed callback is refused even with the state cookie still present', async () => {
    const g = await setup()
    const { state, stateCookie } = await signIn(g)
    const again = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?code=abc&state=${state}`, { headers: { ...NAV, cookie: stateCookie } }),
      ),
    )
    assert.equal(again.status, 400)
    assert.equal(again.code, 'invalid_state')
    assert.equal(g.provider.calls.exchange, 1, 'the code was not exchanged twice')
    assert.ok(!again.setCookies.some((c) => c.startsWith('__Host-gatehouse=')), 'no session set')
  })

  test('a foreign state (no cookie in this browser) is refused', async () => {
    const g = await setup()
    const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const state = new URL(first.headers['location']!).searchParams.get('state')
    const d = respond(
      await g.gatehouse.handle(facts(`/oauth2/callback?code=abc&state=${state}`, { headers: NAV })),
    )
    assert.equal(d.status, 400)
    assert.equal(d.code, 'invalid_state')
    assert.equal(g.provider.calls.exchange, 0)
  })

  test("another attempt's cookie does not validate this state", async () => {
    const g = await setup()
    const a = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const b = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const stateA = new URL(a.headers['location']!).searchParams.get('state')!
    // Put B's sealed value under A's cookie name.
    const bValue = b.setCookies[0]!.split(';')[0]!.split('=').slice(1).join('=')
    const cookie = `__Host-gatehouse-state-${stateA.slice(0, 16)}=${bValue}`
    const d = respond(
      await g.gatehouse.handle(facts(`/oauth2/callback?code=abc&state=${stateA}`, { headers: { cookie } })),
    )
    assert.equal(d.code, 'invalid_state')
    assert.equal(g.provider.calls.exchange, 0)
  })

  test('missing or malformed state', async () => {
    const g = await setup()
    for (const q of ['?code=abc', '?code=abc&state=short', '?code=abc&state=' + 'x'.repeat(43) + '%00']) {
      const d = respond(await g.gatehouse.handle(facts(`/oauth2/callback${q}`, { headers: API })))
      assert.equal(d.status, 400)
      assert.equal(d.code, 'invalid_state')
      assert.equal(JSON.parse(d.body).error, 'invalid_state')
    }
    assert.equal(g.provider.calls.exchange, 0)
  })

  test('a tampered state cookie is refused', async () => {
    const g = await setup()
    const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const state = new URL(first.headers['location']!).searchParams.get('state')
    const pair = first.setCookies[0]!.split(';')[0]!
    const tampered = pair.slice(0, -3) + (pair.endsWith('AAA') ? 'BBB' : 'AAA')
    const d = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?code=abc&state=${state}`, { headers: { cookie: tampered } }),
      ),
    )
    assert.equal(d.code, 'invalid_state')
    assert.equal(g.provider.calls.exchange, 0)
  })

  test('an expired attempt is refused', async () => {
    const g = await setup()
    const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const state = new URL(first.headers['location']!).searchParams.get('state')
    g.clock.advance(601_000)
    const d = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?code=abc&state=${state}`, {
          headers: { cookie: cookieHeaderFrom(first.setCookies) },
        }),
      ),
    )
    assert.equal(d.code, 'invalid_state')
  })

  test('missing code, provider error, rejected code, wrong nonce, provider down', async () => {
    const cases: Array<
      [string, ((g: Awaited<ReturnType<typeof setup>>) => void) | undefined, string, number]
    > = [
      ['', undefined, 'missing_code', 400],
      ['error=access_denied', undefined, 'provider_error', 400],
      [
        'code=abc',
        (g) => {
          g.provider.state.exchange = async () => {
            throw new ProviderRejectedError('invalid_grant', 'code used')
          }
        },
        'code_rejected',
        400,
      ],
      [
        'code=abc',
        (g) => {
          g.provider.state.exchange = async () => {
            throw new ProviderResponseError('unexpected ID Token "nonce" claim value')
          }
        },
        'id_token_invalid',
        400,
      ],
      [
        'code=abc',
        (g) => {
          g.provider.state.exchange = async () => {
            throw new ProviderUnavailableError('timed out')
          }
        },
        'idp_unavailable',
        503,
      ],
    ]
    for (const [query, arrange, code, status] of cases) {
      const g = await setup()
      arrange?.(g)
      const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
      const state = new URL(first.headers['location']!).searchParams.get('state')
      const d = respond(
        await g.gatehouse.handle(
          facts(`/oauth2/callback?${query}&state=${state}`, {
            headers: { ...NAV, cookie: cookieHeaderFrom(first.setCookies) },
          }),
        ),
      )
      assert.equal(d.code, code, query)
      assert.equal(d.status, status)
      assert.match(d.headers['content-type']!, /text\/html/)
      assert.ok(!d.setCookies.some((c) => c.startsWith('__Host-gatehouse=')), `${code}: no session cookie`)
      assert.ok(
        d.setCookies.some((c) => c.includes('-state-') && c.includes('Max-Age=0')),
        `${code}: state cookie cleared`,
      )
    }
  })

  test('the provider error text is reduced to safe characters', async () => {
    const g = await setup()
    const first = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    const state = new URL(first.headers['location']!).searchParams.get('state')
    const d = respond(
      await g.gatehouse.handle(
        facts(`/oauth2/callback?error=%3Cscript%3Ealert(1)%3C/script%3E&state=${state}`, {
          headers: { ...NAV, cookie: cookieHeaderFrom(first.setCookies) },
        }),
      ),
    )
    assert.ok(!d.body.includes('<script>'))
  })

  test('open-redirect return paths fall back to /', async () => {
    const hostile = [
      '//evil.example/',
      '/\\evil.example',
      'https://evil.example/',
      '/%2F%2Fevil.example',
      '/%5Cevil.example',
      '%2F%2Fevil.example',
      'javascript:alert(1)',
      '/\t/evil.example',
      '///evil.example',
    ]
    for (const rd of hostile) {
      const g = await setup()
      const first = respond(
        await g.gatehouse.handle(facts(`/oauth2/sign_in?rd=${encodeURIComponent(rd)}`, { headers: NAV })),
      )
      const state = new URL(first.headers['location']!).searchParams.get('state')
      const cb = respond(
        await g.gatehouse.handle(
          facts(`/oauth2/callback?code=x&state=${state}`, {
            headers: { cookie: cookieHeaderFrom(first.setCookies) },
          }),
        ),
      )
      assert.equal(cb.headers['location'], '/', rd)
    }
  })
})

describe('check_auth with a session', () => {
  test('tampered, truncated, oversized and garbage cookies are refused and cleared', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const value = cookie.split('=').slice(1).join('=')
    const variants = {
      tampered: `__Host-gatehouse=${value.slice(0, 40)}${value[40] === 'A' ? 'B' : 'A'}${value.slice(41)}`,
      truncated: `__Host-gatehouse=${value.slice(0, value.length - 10)}`,
      oversized: `__Host-gatehouse=${'A'.repeat(5000)}`,
      garbage: '__Host-gatehouse=not-a-jwe',
      badChunks: `__Host-gatehouse=9~${value}`,
    }
    for (const [name, c] of Object.entries(variants)) {
      const d = respond(await g.gatehouse.handle(facts('/api/x', { headers: { ...API, cookie: c } })))
      assert.equal(d.status, 401, name)
      assert.equal(d.code, 'invalid_session', name)
      assert.match(d.headers['www-authenticate']!, /error="invalid_token"/)
      assert.ok(
        d.setCookies.some((s) => s.startsWith('__Host-gatehouse=;') && s.includes('Max-Age=0')),
        `${name}: cleared`,
      )
    }
    assert.ok(!JSON.stringify(g.logs).includes(value.slice(0, 40)), 'the cookie never appears in a log')
  })

  test('a session expires after its ttl', async () => {
    const g = await setup({ session: { ttlSeconds: 3600, maxTtlSeconds: 7200, refreshBeforeSeconds: 60 } })
    g.provider.state.accessTtl = 10_000
    const { cookie } = await signIn(g)
    g.clock.advance(3601_000)
    const d = respond(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(d.code, 'session_expired')
    assert.match(
      d.headers['www-authenticate']!,
      /error="invalid_token", error_description="The session expired"/,
    )
  })

  test('restricted routes: 403 when signed in but not allowed, allow by group or email', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = respond(await g.gatehouse.handle(facts('/admin/users', { headers: { ...NAV, cookie } })))
    assert.equal(d.status, 403)
    assert.equal(d.code, 'forbidden')
    g.provider.state.claims = { sub: 'user-2', groups: ['admins'] }
    const admin = await signIn(g)
    allowed(await g.gatehouse.handle(facts('/admin/users', { headers: { ...NAV, cookie: admin.cookie } })))
    g.provider.state.claims = { sub: 'user-3', email: 'BOSS@example.com' }
    const boss = await signIn(g)
    allowed(await g.gatehouse.handle(facts('/admin', { headers: { ...NAV, cookie: boss.cookie } })))
  })

  test('dot segments are resolved before matching and forwarding', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = respond(
      await g.gatehouse.handle(facts('/public/../admin/users', { headers: { ...NAV, cookie } })),
    )
    assert.equal(d.status, 403)
    const e = respond(
      await g.gatehouse.handle(facts('/public/%2e%2e/admin/users', { headers: { ...NAV, cookie } })),
    )
    assert.equal(e.status, 403)
    const ok = allowed(await g.gatehouse.handle(facts('/a/./b/../c?q=1', { headers: { ...NAV, cookie } })))
    assert.equal(ok.path, '/a/c?q=1')
  })

  test('encoded slashes and backslashes in the path are refused with 400', async () => {
    const g = await setup()
    for (const p of ['/public/x%2F..%2F..%2Fadmin', '/public/%5c..%5cadmin', '/a%00b']) {
      const d = respond(await g.gatehouse.handle(facts(p, { headers: API })))
      assert.equal(d.status, 400, p)
      assert.equal(d.code, 'bad_path')
    }
  })

  test('other cookies are forwarded, Gatehouse cookies are not', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = allowed(
      await g.gatehouse.handle(
        facts('/x', {
          headers: { ...NAV, cookie: `theme=dark; ${cookie}; __Host-gatehouse-state-abc=1; lang=en` },
        }),
      ),
    )
    assert.equal(d.upstreamCookie, 'theme=dark; lang=en')
  })
})

describe('refresh_auth', () => {
  test('refreshes once when the access token is within 10 minutes of expiry, even for concurrent requests', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    g.clock.advance((3600 - 500) * 1000)
    const results = await Promise.all(
      Array.from({ length: 20 }, () => g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } }))),
    )
    assert.equal(g.provider.calls.refresh, 1)
    for (const r of results) {
      const d = allowed(r)
      assert.ok(
        d.setCookies.some((c) => c.startsWith('__Host-gatehouse=')),
        'each response carries the new cookie',
      )
    }
    // A request that still carries the old cookie a few seconds later reuses the result.
    g.clock.advance(5_000)
    allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(g.provider.calls.refresh, 1)
    // The new cookie works without another refresh.
    const next = cookieHeaderFrom(allowed(results[0]!).setCookies)
    allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie: next } })))
    assert.equal(g.provider.calls.refresh, 1)
  })

  test('no refresh while the access token has more than refresh_before left', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    g.clock.advance((3600 - 700) * 1000)
    const d = allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(d.setCookies.length, 0)
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('invalid_grant ends the session: cleared cookie, then one sign-in redirect (no loop)', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    g.provider.state.refresh = async () => {
      throw new ProviderRejectedError('invalid_grant', 'grant revoked')
    }
    g.clock.advance((3600 - 100) * 1000)
    const d = respond(await g.gatehouse.handle(facts('/x', { headers: { ...NAV, cookie } })))
    assert.equal(d.status, 302)
    assert.ok(d.headers['location']!.startsWith('https://idp.example/authorize'))
    assert.ok(d.setCookies.some((c) => c.startsWith('__Host-gatehouse=;') && c.includes('Max-Age=0')))
    const api = respond(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'session_expired')
  })

  test('provider unreachable: serve while the access token lives, then a bounded grace marked degraded, then a clean end', async () => {
    const g = await setup({
      session: {
        ttlSeconds: 12 * 3600,
        maxTtlSeconds: 7 * 86400,
        refreshBeforeSeconds: 600,
        outageGraceSeconds: 3600,
      },
    })
    const { cookie } = await signIn(g)
    g.provider.state.refresh = async () => {
      throw new ProviderUnavailableError('connect ECONNREFUSED')
    }
    g.clock.advance((3600 - 100) * 1000)
    const before = allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(
      before.upstreamHeaders['x-gatehouse-degraded'],
      undefined,
      'the token still lives: not degraded',
    )
    // The access token expires at +3600 s; the grace lasts until +7200 s.
    g.clock.advance(200_000)
    const grace = allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(grace.upstreamHeaders['x-gatehouse-degraded'], 'idp-unavailable')
    assert.equal(grace.upstreamHeaders['x-auth-request-user'], 'user-1')
    g.clock.advance(3600_000) // +7300 s: past the grace
    const ended = respond(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(ended.status, 401)
    assert.equal(ended.code, 'session_expired')
    assert.ok(
      ended.setCookies.some((c) => c.startsWith('__Host-gatehouse=;') && c.includes('Max-Age=0')),
      'cleared',
    )
  })

  test('while the provider is unreachable a session retries its refresh with backoff, not on every request', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    g.provider.state.refresh = async () => {
      throw new ProviderUnavailableError('timed out')
    }
    g.clock.advance((3600 - 100) * 1000)
    for (let i = 0; i < 35; i++) {
      allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
      g.clock.advance(100) // 3.5 s of traffic at 10 requests a second; the first backoff is 5 s ± 25%
    }
    assert.equal(g.provider.calls.refresh, 1, 'one attempt in the first backoff window')
    g.clock.advance(10_000)
    allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(g.provider.calls.refresh, 2)
  })

  test('a refresh never extends past max_ttl', async () => {
    const g = await setup({ session: { ttlSeconds: 3600, maxTtlSeconds: 5400, refreshBeforeSeconds: 600 } })
    const { cookie } = await signIn(g)
    g.clock.advance(3100_000)
    const d = allowed(await g.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    const set = d.setCookies.find((c) => c.startsWith('__Host-gatehouse='))!
    assert.match(set, /Max-Age=2300$/, 'ends at sign-in + 5400 s')
  })

  test('the refresh endpoint refreshes on demand', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(d.status, 200)
    assert.equal(g.provider.calls.refresh, 1)
    assert.ok(d.setCookies.some((c) => c.startsWith('__Host-gatehouse=')))
  })
})

describe('sign_out', () => {
  test('clears every Gatehouse cookie, revokes the refresh token and goes to the provider logout', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = respond(
      await g.gatehouse.handle(
        facts('/oauth2/sign_out', { headers: { ...NAV, cookie: `${cookie}; __Host-gatehouse-state-zzz=1` } }),
      ),
    )
    assert.equal(d.status, 302)
    const location = new URL(d.headers['location']!)
    assert.equal(location.origin + location.pathname, 'https://idp.example/logout')
    assert.equal(location.searchParams.get('id_token_hint'), 'id-0')
    assert.equal(location.searchParams.get('post_logout_redirect_uri'), 'https://app.example.com/')
    assert.ok(d.setCookies.includes('__Host-gatehouse=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0'))
    assert.ok(
      d.setCookies.includes('__Host-gatehouse-state-zzz=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0'),
    )
    await new Promise((r) => setImmediate(r))
    assert.equal(g.provider.calls.revoke, 1)
    // The old cookie no longer passes the cache by accident: it is still cryptographically valid
    // (stateless sessions), but the cache entry was dropped.
  })

  test('without a session it only clears and returns to a safe path', async () => {
    const g = await setup()
    const d = respond(await g.gatehouse.handle(facts('/oauth2/sign_out?rd=//evil.example', { headers: NAV })))
    assert.equal(d.headers['location'], '/')
    assert.equal(g.provider.calls.endSession, 0)
  })
})

describe('userinfo and forward-auth', () => {
  test('userinfo answers the identity as JSON', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const d = respond(await g.gatehouse.handle(facts('/oauth2/userinfo', { headers: { ...API, cookie } })))
    assert.equal(d.status, 200)
    assert.equal(JSON.parse(d.body).email, 'alice@example.com')
  })

  test('forward-auth: 202 with identity headers, 401 without a session (never a redirect), 403 by policy', async () => {
    const g = await setup()
    const { cookie } = await signIn(g)
    const ok = respond(
      await g.gatehouse.handle(
        facts('/oauth2/auth', { headers: { ...NAV, cookie, 'x-forwarded-uri': '/app' } }),
      ),
    )
    assert.equal(ok.status, 202)
    assert.equal(ok.headers['x-auth-request-email'], 'alice@example.com')
    const no = respond(
      await g.gatehouse.handle(facts('/oauth2/auth', { headers: { ...NAV, 'x-forwarded-uri': '/app' } })),
    )
    assert.equal(no.status, 401)
    const forbidden = respond(
      await g.gatehouse.handle(facts('/oauth2/auth', { headers: { cookie, 'x-forwarded-uri': '/admin/x' } })),
    )
    assert.equal(forbidden.status, 403)
    const anon = respond(
      await g.gatehouse.handle(facts('/oauth2/auth', { headers: { 'x-forwarded-uri': '/public/a' } })),
    )
    assert.equal(anon.status, 202)
  })

  test('unknown endpoints under the prefix are 404', async () => {
    const g = await setup()
    const d = respond(await g.gatehouse.handle(facts('/oauth2/nope', { headers: API })))
    assert.equal(d.status, 404)
  })
})

describe('cookies over http (dev)', () => {
  test('no __Host- prefix and no Secure on http://localhost', async () => {
    const g = await setup({}, 'http://localhost:8080')
    const d = respond(await g.gatehouse.handle(facts('/', { headers: NAV })))
    assert.ok(d.setCookies[0]!.startsWith('gatehouse-state-'))
    assert.ok(!d.setCookies[0]!.includes('Secure'))
  })
})

describe('protection (seed 003)', () => {
  function scriptedLimiter(limits: Partial<Record<RateBucket, number>>) {
    const used = new Map<string, number>()
    const limiter: RateLimiter = {
      async consume(bucket, key) {
        const k = `${bucket}:${key}`
        const n = (used.get(k) ?? 0) + 1
        used.set(k, n)
        const max = limits[bucket]
        return max !== undefined && n > max ? { allowed: false, retryAfterSeconds: 42 } : { allowed: true }
      },
    }
    return { limiter, used }
  }

  test('over the per-client limit: 429 with Retry-After, nothing allowed through', async () => {
    const { limiter } = scriptedLimiter({ client: 3 })
    const g = await setup({}, 'https://app.example.com', { limiter })
    for (let i = 0; i < 3; i++) allowed(await g.gatehouse.handle(facts('/public/a', { headers: API })))
    const d = respond(await g.gatehouse.handle(facts('/public/a', { headers: API })))
    assert.equal(d.status, 429)
    assert.equal(d.code, 'rate_limited')
    assert.equal(d.headers['retry-after'], '42')
    assert.equal(JSON.parse(d.body).error, 'rate_limited')
    // Another client address has its own budget.
    allowed(await g.gatehouse.handle(facts('/public/a', { headers: API, ip: '10.0.0.9' })))
  })

  test('sign-in endpoints have their own, tighter limit; per-credential limits follow the session', async () => {
    const { limiter } = scriptedLimiter({ auth_endpoint: 2, credential: 2 })
    const g = await setup({}, 'https://app.example.com', { limiter })
    respond(await g.gatehouse.handle(facts('/oauth2/sign_in', { headers: NAV })))
    respond(await g.gatehouse.handle(facts('/oauth2/sign_in', { headers: NAV })))
    const third = respond(await g.gatehouse.handle(facts('/oauth2/sign_in', { headers: NAV })))
    assert.equal(third.status, 429)
    assert.equal(g.provider.calls.authorize, 2, 'the refused sign-in never reached the provider')
    const other = await setup({}, 'https://app.example.com', {
      limiter: scriptedLimiter({ credential: 2 }).limiter,
    })
    const { cookie } = await signIn(other)
    allowed(await other.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    allowed(await other.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    const limited = respond(await other.gatehouse.handle(facts('/x', { headers: { ...API, cookie } })))
    assert.equal(limited.status, 429)
  })

  test('a bad bearer token presented again costs a lookup, not another verification', async () => {
    let verifications = 0
    const bearer = {
      async verify() {
        verifications++
        return { ok: false as const, code: 'token_expired' as const, reason: 'token expired' }
      },
      forget() {},
    }
    const g = await setup({}, 'https://app.example.com', { bearer })
    for (let i = 0; i < 100; i++) {
      const d = respond(
        await g.gatehouse.handle(facts('/api', { headers: { authorization: 'Bearer aaa.bbb.ccc' } })),
      )
      assert.equal(d.status, 401)
      assert.match(
        d.headers['www-authenticate']!,
        /error="invalid_token", error_description="The access token expired"/,
      )
    }
    assert.equal(verifications, 1)
    g.clock.advance(61_000)
    await g.gatehouse.handle(facts('/api', { headers: { authorization: 'Bearer aaa.bbb.ccc' } }))
    assert.equal(verifications, 2, 'the memory of a refusal is short')
  })

  test('for shedding, a session cookie already refused counts as rejected, not as a credential', async () => {
    const g = await setup()
    const cookie = '__Host-gatehouse=a.b.c.d.e'
    assert.equal(g.gatehouse.classify(facts('/api', { headers: { ...API, cookie } })), 'credential')
    respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
    assert.equal(g.gatehouse.classify(facts('/api', { headers: { ...API, cookie } })), 'rejected')
    const { cookie: good } = await signIn(g)
    allowed(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: good } })))
    assert.equal(g.gatehouse.classify(facts('/api', { headers: { ...API, cookie: good } })), 'credential')
    assert.equal(g.gatehouse.classify(facts('/api', { headers: API })), 'none')
  })

  test('a client repeating a refused token or cookie is answered later and later, up to the cap', async () => {
    const bearer = {
      async verify() {
        return { ok: false as const, code: 'token_expired' as const, reason: 'token expired' }
      },
      forget() {},
    }
    const g = await setup({ repeatPenalty: { after: 2, maxDelayMs: 300 } }, 'https://app.example.com', {
      bearer,
    })
    const delays: Array<number | undefined> = []
    for (let i = 0; i < 8; i++) {
      const d = respond(
        await g.gatehouse.handle(facts('/api', { headers: { authorization: 'Bearer aaa.bbb.ccc' } })),
      )
      assert.equal(d.status, 401)
      delays.push(d.delayMs)
    }
    // First answer, then 2 free repeats; then 50 ms doubling, capped at 300.
    assert.deepEqual(delays, [undefined, undefined, undefined, 50, 100, 200, 300, 300])
    // Another token from the same client starts at no delay: the penalty follows the credential.
    const other = respond(
      await g.gatehouse.handle(facts('/api', { headers: { authorization: 'Bearer aaa.bbb.ddd' } })),
    )
    assert.equal(other.delayMs, undefined)
    // A bad session cookie repeated: same rule, and the refusal is logged once, not per retry.
    const cookie = '__Host-gatehouse=a.b.c.d.e'
    const cookieDelays: Array<number | undefined> = []
    for (let i = 0; i < 5; i++) {
      const d = respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
      assert.equal(d.status, 401)
      assert.equal(d.code, 'invalid_session')
      cookieDelays.push(d.delayMs)
    }
    assert.deepEqual(cookieDelays, [undefined, undefined, undefined, 50, 100])
    assert.equal(g.logs.filter((l) => l.msg === 'session cookie refused').length, 1)
    // A browser navigating with it is sent to sign in, never held.
    const nav = respond(await g.gatehouse.handle(facts('/page', { headers: { ...NAV, cookie } })))
    assert.equal(nav.status, 302)
    assert.equal(nav.delayMs, undefined)
    // Without the option, nothing is ever held.
    const plain = await setup({}, 'https://app.example.com', { bearer })
    for (let i = 0; i < 10; i++) {
      const d = respond(
        await plain.gatehouse.handle(facts('/api', { headers: { authorization: 'Bearer aaa.bbb.ccc' } })),
      )
      assert.equal(d.delayMs, undefined)
    }
  })
})
