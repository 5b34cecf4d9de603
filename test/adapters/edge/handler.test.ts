/**
 * The Lambda@Edge functions on documented CloudFront event shapes, against a real oidc-provider:
 * every branch of check-auth, parse-auth, refresh-auth, sign-out and http-headers. The session clock
 * is frozen and jumps; the provider runs on real time.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { CoreBundle, HeadersBundle } from '../../../src/adapters/edge/bundle.ts'
import type {
  CloudFrontRequestEvent,
  CloudFrontRequestResult,
} from '../../../src/adapters/edge/cloudfront.ts'
import { createEdgeHandler } from '../../../src/adapters/edge/handler.ts'
import { createHttpHeadersHandler } from '../../../src/adapters/edge/http-headers.ts'
import { prepareEdgeBundles } from '../../../src/cli/build-edge.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import type { Config } from '../../../src/config/schema.ts'
import { validateConfig } from '../../../src/config/validate.ts'
import { createFrozenClock } from '../../../src/core/clock.ts'
import type { Logger } from '../../../src/core/ports.ts'
import { createSessionCodec } from '../../../src/core/session-codec.ts'
import { browserFetch } from '../../helpers/browser-fetch.ts'
import { createCookieClient } from '../../helpers/cookie-client.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'
import {
  createJar,
  DOMAIN,
  generated,
  header,
  NAVIGATE,
  originResponse,
  passedOn,
  setCookies,
  viewerRequest,
} from './events.ts'

const ORIGIN = `https://${DOMAIN}`
const SESSION_SECRET = 'edge-session-secret-0123456789abcdefghijkl'
const ACCESS_TTL = 3600
type Handler = (event: CloudFrontRequestEvent) => Promise<CloudFrontRequestResult>

describe('Lambda@Edge functions', () => {
  let idp: TestIdP
  let dir: string
  let config: Config
  const clock = createFrozenClock(Date.now())
  const logs: Array<Record<string, unknown>> = []
  const log: Logger = {
    debug: (o, msg) => logs.push({ ...o, msg }),
    info: (o, msg) => logs.push({ ...o, msg }),
    error: (o, msg) => {
      logs.push({ ...o, msg })
      if (process.env['EDGE_DEBUG']) console.error(o, msg)
    },
    warn: (o, msg) => {
      logs.push({ ...o, msg })
      if (process.env['EDGE_DEBUG']) console.error(o, msg)
    },
  }
  let checkAuth: Handler
  let parseAuth: Handler
  let refreshAuth: Handler
  let signOut: Handler
  let bundles: Awaited<ReturnType<typeof prepareEdgeBundles>>['bundles']

  before(async () => {
    idp = await startTestIdP({
      redirectUris: [`${ORIGIN}/oauth2/callback`],
      postLogoutRedirectUris: [`${ORIGIN}/`, `${ORIGIN}/bye`],
      accessTokenTtlSeconds: ACCESS_TTL,
    })
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-edge-'))
    config = validateConfig({
      public_url: ORIGIN,
      upstream: 'https://origin.example.com',
      data_dir: dir,
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CLIENT_SECRET' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'SESSION_SECRET' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [
        { path: '/admin/*', allow: { groups: ['nobody'] } },
        { path: '/public/*', allow: 'anonymous' },
      ],
    })
    const prepared = await prepareEdgeBundles(config, {
      baseDir: dir,
      env: { CLIENT_SECRET: idp.clientSecret, SESSION_SECRET },
      clock,
    })
    bundles = prepared.bundles
    assert.equal(prepared.provider.source, 'network')
    const make = (fn: 'check-auth' | 'parse-auth' | 'refresh-auth' | 'sign-out') =>
      createEdgeHandler(bundles[fn] as CoreBundle, { clock, log })
    checkAuth = make('check-auth')
    parseAuth = make('parse-auth')
    refreshAuth = make('refresh-auth')
    signOut = make('sign-out')
  })

  after(async () => {
    await idp?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  /** A whole sign-in: check-auth's redirect, the provider's pages, parse-auth's callback. */
  async function signInAt(path: string, jar = createJar()) {
    const start = generated(
      await checkAuth(viewerRequest(path, { headers: { ...NAVIGATE, cookie: jar.header() } })),
    )
    assert.equal(start.status, '302')
    jar.take(start)
    const callback = await signIn(
      createCookieClient({ fetch: browserFetch }),
      header(start.headers, 'location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    assert.equal(callback.origin + callback.pathname, `${ORIGIN}/oauth2/callback`)
    const done = generated(
      await parseAuth(
        viewerRequest(callback.pathname + callback.search, {
          headers: { ...NAVIGATE, cookie: jar.header() },
        }),
      ),
    )
    jar.take(done)
    return { jar, done, callback }
  }

  describe('check-auth', () => {
    test('no session, a navigation: 302 to the provider with its own state cookie, security headers set', async () => {
      const r = generated(await checkAuth(viewerRequest('/page?x=1', { headers: NAVIGATE })))
      assert.equal(r.status, '302')
      assert.equal(r.statusDescription, 'Found')
      const location = new URL(header(r.headers, 'location')!)
      assert.equal(location.origin + location.pathname, `${idp.issuer}/auth`)
      assert.equal(location.searchParams.get('redirect_uri'), `${ORIGIN}/oauth2/callback`)
      assert.equal(location.searchParams.get('code_challenge_method'), 'S256')
      assert.equal(header(r.headers, 'cache-control'), 'no-store')
      const state = setCookies(r).find((c) => c.startsWith('__Host-gatehouse-state-'))!
      assert.match(state, /; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=600$/)
      assert.equal(r.headers['strict-transport-security']?.[0]?.key, 'Strict-Transport-Security')
      assert.equal(header(r.headers, 'x-content-type-options'), 'nosniff')
      assert.equal(r.body, undefined)
    })

    test('no session, XHR or fetch: 401 with WWW-Authenticate, never a redirect (cf-at-edge #233)', async () => {
      const variants = [
        { accept: '*/*', 'sec-fetch-mode': 'cors' },
        { accept: 'application/json' },
        { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' },
      ]
      for (const headers of variants) {
        const r = generated(await checkAuth(viewerRequest('/api/items', { headers })))
        assert.equal(r.status, '401', JSON.stringify(headers))
        assert.equal(r.headers['www-authenticate']?.[0]?.key, 'WWW-Authenticate')
        assert.equal(header(r.headers, 'www-authenticate'), 'Bearer realm="gatehouse"')
        assert.deepEqual(JSON.parse(r.body!), {
          error: 'missing_credentials',
          error_description: 'Sign-in required',
        })
        assert.equal(r.headers['set-cookie'], undefined, 'no state cookie for a request that cannot sign in')
      }
      const post = generated(
        await checkAuth(viewerRequest('/form', { method: 'POST', headers: { accept: 'text/html' } })),
      )
      assert.equal(post.status, '401', 'a POST is never a navigation to redirect')
    })

    test('parallel expired requests each get their own state cookie and both sign-ins complete (cf-at-edge #37)', async () => {
      const jar = createJar()
      const [a, b] = await Promise.all([
        checkAuth(viewerRequest('/one', { headers: NAVIGATE })),
        checkAuth(viewerRequest('/two?tab=2', { headers: NAVIGATE })),
      ]).then((rs) => rs.map(generated))
      jar.take(a!)
      jar.take(b!)
      const states = [...jar.cookies.keys()].filter((n) => n.startsWith('__Host-gatehouse-state-'))
      assert.equal(states.length, 2, 'two attempts, two cookies: neither overwrites the other')
      const browser = createCookieClient({ fetch: browserFetch })
      const callbacks = []
      for (const r of [a!, b!]) {
        callbacks.push(
          await signIn(
            browser,
            header(r.headers, 'location')!,
            DEMO_USER.username,
            DEMO_USER.password,
            idp.issuer,
          ),
        )
      }
      // The callbacks arrive in the other order, both with both state cookies.
      const cookie = jar.header()
      const second = generated(
        await parseAuth(
          viewerRequest(callbacks[1]!.pathname + callbacks[1]!.search, { headers: { ...NAVIGATE, cookie } }),
        ),
      )
      const first = generated(
        await parseAuth(
          viewerRequest(callbacks[0]!.pathname + callbacks[0]!.search, { headers: { ...NAVIGATE, cookie } }),
        ),
      )
      assert.equal(second.status, '302')
      assert.equal(header(second.headers, 'location'), '/two?tab=2')
      assert.equal(first.status, '302')
      assert.equal(header(first.headers, 'location'), '/one')
    })

    test('a valid session passes with identity headers; spoofed ones and Gatehouse cookies are removed', async () => {
      const { jar, done } = await signInAt('/page?x=1')
      assert.equal(done.status, '302')
      assert.equal(header(done.headers, 'location'), '/page?x=1')
      const session = setCookies(done).find((c) => c.startsWith('__Host-gatehouse='))!
      assert.match(session, /; Path=\/; HttpOnly; SameSite=Lax; Secure/)
      assert.ok(
        setCookies(done).some((c) => c.startsWith('__Host-gatehouse-state-') && /Max-Age=0/.test(c)),
        'state cleared',
      )

      const sessionCookie = jar.header()!
      // HTTP/2 viewers send each cookie as its own field: CloudFront gives them as separate entries.
      const req = passedOn(
        await checkAuth(
          viewerRequest('/page/../app/./x?y=2', {
            headers: {
              ...NAVIGATE,
              cookie: [sessionCookie, 'theme=dark'],
              'x-auth-request-user': 'root',
              'x-gatehouse-degraded': 'no',
            },
          }),
        ),
      )
      assert.equal(req.uri, '/app/x')
      assert.equal(req.querystring, 'y=2')
      assert.equal(header(req.headers, 'x-auth-request-email'), DEMO_USER.email)
      assert.equal(header(req.headers, 'x-auth-request-groups'), 'admins,staff')
      assert.notEqual(header(req.headers, 'x-auth-request-user'), 'root')
      assert.equal(req.headers['x-auth-request-user']?.[0]?.key, 'X-Auth-Request-User')
      assert.equal(req.headers['x-gatehouse-degraded'], undefined)
      assert.deepEqual(req.headers['cookie'], [{ key: 'Cookie', value: 'theme=dark' }])
      assert.equal(header(req.headers, 'host'), DOMAIN, 'read-only headers are left alone')

      // Policy: signed in but not in the group.
      const forbidden = generated(
        await checkAuth(
          viewerRequest('/admin/x', { headers: { accept: 'application/json', cookie: sessionCookie } }),
        ),
      )
      assert.equal(forbidden.status, '403')
      assert.equal(JSON.parse(forbidden.body!).error, 'forbidden')
      // Anonymous routes pass without a session, and with one get the identity.
      passedOn(await checkAuth(viewerRequest('/public/a.css', { headers: { accept: 'text/css' } })))
      const anon = passedOn(
        await checkAuth(viewerRequest('/public/a.css', { headers: { cookie: sessionCookie } })),
      )
      assert.equal(header(anon.headers, 'x-auth-request-email'), DEMO_USER.email)
      // A HEAD gets no body.
      const head = generated(
        await checkAuth(viewerRequest('/api', { method: 'HEAD', headers: { accept: 'application/json' } })),
      )
      assert.equal(head.status, '401')
      assert.equal(head.body, undefined)

      // The logs never hold the cookie or a token.
      const text = JSON.stringify(logs)
      for (const part of sessionCookie.split(/[=;.]/))
        if (part.length > 20) assert.ok(!text.includes(part), 'log leaks a cookie')
    })

    test('client-sent forwarding and identity headers never reach the origin, on any route kind', async () => {
      // What a client can send to pose as a proxy or a signed-in user (docs/security.md: always removed).
      // A viewer-request event holds only what the viewer sent: CloudFront adds its own X-Forwarded-For
      // to the origin request after this trigger, so none of these is CloudFront's and all must go.
      const spoofed = {
        'x-forwarded-user': 'admin',
        'x-forwarded-email': 'admin@example.com',
        'x-forwarded-groups': 'admins',
        'x-forwarded-preferred-username': 'admin',
        'x-forwarded-access-token': 'forged',
        'x-forwarded-host': 'evil.example',
        'x-forwarded-for': '10.0.0.1',
        'x-forwarded-proto': 'http',
        'x-forwarded-uri': '/admin',
        forwarded: 'for=10.0.0.1;host=evil.example;proto=http',
        'x-real-ip': '10.0.0.1',
        'x-auth-request-user': 'admin',
        'x-auth-request-email': 'admin@example.com',
        'x-auth-request-groups': 'admins',
        'x-gatehouse-degraded': 'no',
      }
      const isForwarding = (name: string) =>
        name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip'
      /** Every header the origin gets, checked: nothing forwarded, identity only as Gatehouse set it. */
      const assertClean = (
        req: ReturnType<typeof passedOn>,
        identity: Record<string, string>,
        label: string,
      ) => {
        const forwarded = Object.keys(req.headers).filter(isForwarding)
        assert.deepEqual(forwarded, [], `${label}: forwarding headers reach the origin`)
        const own = Object.fromEntries(
          Object.entries(req.headers)
            .filter(([n]) => n.startsWith('x-auth-request-') || n.startsWith('x-gatehouse-'))
            .map(([n, entries]) => [n, entries.map((e) => e.value).join('|')]),
        )
        assert.deepEqual(own, identity, `${label}: identity headers other than Gatehouse's`)
        assert.equal(header(req.headers, 'host'), DOMAIN, `${label}: read-only Host left alone`)
        assert.equal(header(req.headers, 'user-agent'), 'Mozilla/5.0 (test)', `${label}: other headers kept`)
      }
      const { jar } = await signInAt('/spoof')
      const cookie = jar.header()!
      // Gatehouse's own identity headers, from a request that sent none.
      const clean = passedOn(await checkAuth(viewerRequest('/page', { headers: { ...NAVIGATE, cookie } })))
      const signedIn = Object.fromEntries(
        Object.entries(clean.headers)
          .filter(([n]) => n.startsWith('x-auth-request-'))
          .map(([n, entries]) => [n, entries.map((e) => e.value).join('|')]),
      )
      assert.equal(signedIn['x-auth-request-email'], DEMO_USER.email)
      assert.equal(signedIn['x-auth-request-groups'], 'admins,staff')
      assert.notEqual(signedIn['x-auth-request-user'], 'admin')
      const cases = [
        { label: 'protected, signed in', path: '/page', cookie, identity: signedIn },
        { label: 'anonymous, no session', path: '/public/a.css', cookie: undefined, identity: {} },
        { label: 'anonymous, signed in', path: '/public/a.css', cookie, identity: signedIn },
      ]
      for (const c of cases) {
        const headers = { ...NAVIGATE, ...spoofed, cookie: c.cookie }
        assertClean(passedOn(await checkAuth(viewerRequest(c.path, { headers }))), c.identity, c.label)
        // Upper-case keys as an HTTP/1.1 viewer may send them, and a repeated field (the object's
        // keys, CloudFront's lower-case names, are what is checked).
        const shouting = viewerRequest(c.path, { headers })
        for (const entries of Object.values(shouting.Records[0].cf.request.headers))
          for (const e of entries) e.key = e.key?.toUpperCase()
        shouting.Records[0].cf.request.headers['x-forwarded-user']!.push({
          key: 'x-forwarded-user',
          value: 'root',
        })
        assertClean(passedOn(await checkAuth(shouting)), c.identity, `${c.label}, upper case`)
      }
    })

    test('bad input: a broken session cookie, a malformed bearer token, a bad path', async () => {
      const broken = generated(
        await checkAuth(
          viewerRequest('/x', {
            headers: { accept: 'application/json', cookie: '__Host-gatehouse=eyJub3QiOiJhIGp3ZSJ9' },
          }),
        ),
      )
      assert.equal(broken.status, '401')
      assert.equal(JSON.parse(broken.body!).error, 'invalid_session')
      assert.match(header(broken.headers, 'www-authenticate')!, /error="invalid_token"/)
      assert.ok(setCookies(broken).some((c) => c.startsWith('__Host-gatehouse=;') && /Max-Age=0/.test(c)))
      const bearer = generated(
        await checkAuth(viewerRequest('/x', { headers: { authorization: 'Bearer not.a.jwt' } })),
      )
      assert.equal(bearer.status, '401')
      assert.equal(JSON.parse(bearer.body!).error, 'invalid_token')
      const bad = generated(
        await checkAuth(viewerRequest('/a%2F..%2Fadmin', { headers: { accept: 'application/json' } })),
      )
      assert.equal(bad.status, '400')
      assert.equal(JSON.parse(bad.body!).error, 'bad_path')
    })

    test('paths of the other functions are refused with 404, and a wrong trigger with 500', async () => {
      for (const path of ['/oauth2/callback?code=x&state=y', '/oauth2/refresh', '/oauth2/sign_out']) {
        const r = generated(await checkAuth(viewerRequest(path, { headers: NAVIGATE })))
        assert.equal(r.status, '404', path)
        assert.deepEqual(JSON.parse(r.body!), { error: 'not_found' })
      }
      // An encoded name is no endpoint at all: the core's own 404, no exchange attempted.
      assert.equal(
        generated(await checkAuth(viewerRequest('/oauth2/%63allback?code=x', { headers: NAVIGATE }))).status,
        '404',
      )
      const wrong = generated(await checkAuth(viewerRequest('/', { eventType: 'origin-request' })))
      assert.equal(wrong.status, '500')
      assert.deepEqual(JSON.parse(wrong.body!), { error: 'edge_misconfigured' })
      for (const [fn, h] of [
        ['parse-auth', parseAuth],
        ['refresh-auth', refreshAuth],
        ['sign-out', signOut],
      ] as const) {
        const r = generated(await h(viewerRequest('/page', { headers: NAVIGATE })))
        assert.equal(r.status, '404', fn)
      }
      assert.throws(
        () =>
          createEdgeHandler({
            ...(bundles['parse-auth'] as CoreBundle),
            secrets: { session: [SESSION_SECRET] },
          }),
        /clientSecret/,
      )
    })
  })

  describe('parse-auth', () => {
    test('refuses a missing, unknown, foreign or replayed state, a provider error and a bad code', async () => {
      const status = async (target: string, cookie?: string) => {
        const r = generated(
          await parseAuth(viewerRequest(target, { headers: { accept: 'application/json', cookie } })),
        )
        return { status: r.status, error: JSON.parse(r.body!).error as string, r }
      }
      assert.deepEqual((await status('/oauth2/callback?code=abc')).error, 'invalid_state')
      const state = 'A'.repeat(43)
      assert.deepEqual((await status(`/oauth2/callback?code=abc&state=${state}`)).error, 'invalid_state')

      // A real attempt: its state cookie, then a provider error, then a code the provider never issued.
      const jar = createJar()
      const start = generated(await checkAuth(viewerRequest('/p', { headers: NAVIGATE })))
      jar.take(start)
      const realState = new URL(header(start.headers, 'location')!).searchParams.get('state')!
      const iss = encodeURIComponent(idp.issuer)
      const denied = await status(`/oauth2/callback?error=access_denied&state=${realState}`, jar.header())
      assert.equal(denied.status, '400')
      assert.equal(denied.error, 'provider_error')
      const forged = await status(`/oauth2/callback?code=forged&state=${realState}&iss=${iss}`, jar.header())
      assert.equal(forged.status, '400')
      assert.equal(forged.error, 'code_rejected')
      assert.ok(
        setCookies(forged.r).some((c) => c.startsWith('__Host-gatehouse-state-') && /Max-Age=0/.test(c)),
      )
      const replay = await status(`/oauth2/callback?code=forged&state=${realState}&iss=${iss}`, jar.header())
      assert.equal(replay.error, 'invalid_state', 'a state is single use')
      // Another browser's state cookie does not fit this state.
      const other = createJar()
      other.take(generated(await checkAuth(viewerRequest('/p', { headers: NAVIGATE }))))
      const swapped = other.header()!.replace(/state-[^=]+=/, `state-${realState.slice(0, 16)}=`)
      assert.equal(
        (await status(`/oauth2/callback?code=x&state=${realState}`, swapped)).error,
        'invalid_state',
      )
      // A browser navigation gets a page with a way out.
      const page = generated(await parseAuth(viewerRequest('/oauth2/callback?code=x', { headers: NAVIGATE })))
      assert.equal(page.status, '400')
      assert.match(header(page.headers, 'content-type')!, /text\/html/)
      assert.match(page.body!, /href="\/oauth2\/sign_in"/)
    })
  })

  describe('refresh-auth', () => {
    test('a session near expiry is sent to refresh-auth, which refreshes at the provider and returns', async () => {
      const { jar } = await signInAt('/start')
      const before = jar.header()!
      clock.advance((ACCESS_TTL - 599) * 1000)
      // A navigation is bounced to refresh-auth with its path; an API call is still served.
      const nav = generated(
        await checkAuth(viewerRequest('/docs?a=1', { headers: { ...NAVIGATE, cookie: before } })),
      )
      assert.equal(nav.status, '302')
      assert.equal(header(nav.headers, 'location'), '/oauth2/refresh?rd=%2Fdocs%3Fa%3D1')
      passedOn(
        await checkAuth(viewerRequest('/api', { headers: { accept: 'application/json', cookie: before } })),
      )
      // Once the access token has expired, an API call is told to refresh: 401, not a redirect.
      clock.advance(600 * 1000)
      const api = generated(
        await checkAuth(viewerRequest('/api', { headers: { 'sec-fetch-mode': 'cors', cookie: before } })),
      )
      assert.equal(api.status, '401')
      assert.equal(JSON.parse(api.body!).error, 'refresh_required')
      assert.match(header(api.headers, 'www-authenticate')!, /error="invalid_token"/)

      const refreshed = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh?rd=%2Fdocs%3Fa%3D1', { headers: { ...NAVIGATE, cookie: before } }),
        ),
      )
      assert.equal(refreshed.status, '302')
      assert.equal(header(refreshed.headers, 'location'), '/docs?a=1')
      jar.take(refreshed)
      assert.notEqual(jar.header(), before)
      passedOn(
        await checkAuth(viewerRequest('/docs?a=1', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )

      // A script refreshes with a POST and gets JSON.
      clock.advance((ACCESS_TTL - 100) * 1000)
      const post = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh', {
            method: 'POST',
            headers: { accept: 'application/json', cookie: jar.header() },
          }),
        ),
      )
      assert.equal(post.status, '200')
      assert.equal(typeof JSON.parse(post.body!).expires_at, 'number')
    })

    test('without a session: sign-in for a navigation, 401 for a script; a refused refresh starts a new sign-in', async () => {
      const nav = generated(
        await refreshAuth(viewerRequest('/oauth2/refresh?rd=%2Fhere', { headers: NAVIGATE })),
      )
      assert.equal(nav.status, '302')
      assert.ok(header(nav.headers, 'location')!.startsWith(`${idp.issuer}/auth`))
      const api = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh', { method: 'POST', headers: { accept: 'application/json' } }),
        ),
      )
      assert.equal(api.status, '401')
      assert.equal(JSON.parse(api.body!).error, 'missing_credentials')
      const evil = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh?rd=https%3A%2F%2Fevil.example%2F', { headers: NAVIGATE }),
        ),
      )
      assert.equal(evil.status, '302')

      // The provider revokes the refresh token: refresh-auth sends the browser back to rd once (another
      // tab may have just set a newer session), then, with the same refused session back, clears it and
      // signs in again.
      const { jar } = await signInAt('/r')
      const codec = await createSessionCodec({
        secrets: [SESSION_SECRET],
        cookieName: '__Host-gatehouse',
        secure: true,
        clock,
      })
      const read = await codec.read(jar.header())
      assert.ok(read.ok)
      const revoke = await fetch(`${idp.issuer}/token/revocation`, {
        method: 'POST',
        headers: { authorization: `Basic ${btoa(`${idp.clientId}:${idp.clientSecret}`)}` },
        body: new URLSearchParams({ token: read.session.refreshToken!, token_type_hint: 'refresh_token' }),
      })
      assert.equal(revoke.status, 200)
      const once = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh?rd=%2Fr', { headers: { ...NAVIGATE, cookie: jar.header() } }),
        ),
      )
      assert.equal(once.status, '302')
      assert.equal(header(once.headers, 'location'), '/r')
      assert.deepEqual(
        setCookies(once).map((c) => c.slice(0, c.indexOf('='))),
        ['__Host-gatehouse-refresh-wait'],
        'the session is kept the first time',
      )
      jar.take(once)
      const refused = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh?rd=%2Fr', { headers: { ...NAVIGATE, cookie: jar.header() } }),
        ),
      )
      assert.equal(refused.status, '302')
      assert.ok(header(refused.headers, 'location')!.startsWith(`${idp.issuer}/auth`))
      assert.ok(
        setCookies(refused).some((c) => c.startsWith('__Host-gatehouse=;') && /Max-Age=0/.test(c)),
        'session cleared',
      )
      const refusedApi = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh', {
            method: 'POST',
            headers: { accept: 'application/json', cookie: jar.header() },
          }),
        ),
      )
      assert.equal(refusedApi.status, '401')
      assert.equal(JSON.parse(refusedApi.body!).error, 'session_expired')
    })
  })

  describe('refresh-auth: two tabs on two instances', () => {
    test('with rotation, the tab whose refresh is refused does not wipe the session the other tab got', async () => {
      // Two tabs bounced at once land on different Lambda instances: no shared single-flight. The test
      // provider rotates refresh tokens, so the second refresh of the same token is invalid_grant.
      const { jar } = await signInAt('/race')
      const before = jar.header()!
      const refusedSession = jar.cookies.get('__Host-gatehouse')!
      clock.advance((ACCESS_TTL - 599) * 1000)
      const instance = () => createEdgeHandler(bundles['refresh-auth'] as CoreBundle, { clock, log })
      const [first, second, third] = [instance(), instance(), instance()]
      const nav = (rd: string, cookie: string | undefined) =>
        viewerRequest(`/oauth2/refresh?rd=${encodeURIComponent(rd)}`, { headers: { ...NAVIGATE, cookie } })
      const won = generated(await first(nav('/one', before)))
      assert.equal(header(won.headers, 'location'), '/one')
      assert.ok(setCookies(won).some((c) => c.startsWith('__Host-gatehouse=') && !/Max-Age=0/.test(c)))
      const lost = generated(await second(nav('/two', before)))
      assert.equal(lost.status, '302')
      assert.equal(header(lost.headers, 'location'), '/two', 'back to rd, not to sign in')
      assert.ok(
        !setCookies(lost).some((c) => c.startsWith('__Host-gatehouse=')),
        'the session cookie is left alone',
      )
      // The refused tab's answer arrives last: the browser keeps the winner's session and is served.
      jar.take(won)
      jar.take(lost)
      assert.notEqual(jar.cookies.get('__Host-gatehouse'), undefined)
      const served = passedOn(
        await checkAuth(viewerRequest('/two', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )
      assert.equal(header(served.headers, 'x-auth-request-email'), DEMO_USER.email)
      assert.equal(served.headers['cookie'], undefined, 'neither cookie reaches the origin')

      // A browser that never got the winner's cookie comes back with the refused session: bounced once
      // more, and then (on any instance) cleared and sent to sign in; no loop.
      const stale = createJar()
      for (const [name, value] of jar.cookies) if (name !== '__Host-gatehouse') stale.cookies.set(name, value)
      stale.cookies.set('__Host-gatehouse', refusedSession)
      const bounced = generated(
        await checkAuth(viewerRequest('/two', { headers: { ...NAVIGATE, cookie: stale.header() } })),
      )
      assert.equal(header(bounced.headers, 'location'), '/oauth2/refresh?rd=%2Ftwo')
      const out = generated(await third(nav('/two', stale.header())))
      assert.equal(out.status, '302')
      assert.ok(header(out.headers, 'location')!.startsWith(`${idp.issuer}/auth`))
      const cleared = setCookies(out)
        .filter((c) => /Max-Age=0/.test(c))
        .map((c) => c.slice(0, c.indexOf('=')))
      assert.ok(cleared.includes('__Host-gatehouse'), 'session cleared')
      assert.ok(cleared.includes('__Host-gatehouse-refresh-wait'), 'marker cleared')
    })
  })

  describe('sign-out', () => {
    test('clears every Gatehouse cookie and sends the browser to the provider logout; unsafe rd ignored', async () => {
      const { jar } = await signInAt('/s')
      jar.take(generated(await checkAuth(viewerRequest('/t', { headers: NAVIGATE }))))
      const r = generated(
        await signOut(
          viewerRequest('/oauth2/sign_out?rd=%2Fbye', { headers: { ...NAVIGATE, cookie: jar.header() } }),
        ),
      )
      assert.equal(r.status, '302')
      const location = new URL(header(r.headers, 'location')!)
      assert.equal(location.origin + location.pathname, `${idp.issuer}/session/end`)
      assert.equal(location.searchParams.get('post_logout_redirect_uri'), `${ORIGIN}/bye`)
      assert.equal(location.searchParams.get('id_token_hint'), null, 'no ID token in the URL')
      assert.ok(location.searchParams.get('client_id'))
      const cleared = setCookies(r)
        .filter((c) => /Max-Age=0/.test(c))
        .map((c) => c.slice(0, c.indexOf('=')))
      assert.ok(cleared.includes('__Host-gatehouse'))
      assert.ok(cleared.some((n) => n.startsWith('__Host-gatehouse-state-')))
      const anonymous = generated(
        await signOut(
          viewerRequest('/oauth2/sign_out?rd=https%3A%2F%2Fevil.example', {
            method: 'POST',
            headers: NAVIGATE,
          }),
        ),
      )
      assert.equal(anonymous.status, '302')
      assert.equal(header(anonymous.headers, 'location'), '/')
    })
  })

  describe('http-headers', () => {
    const handler = () => createHttpHeadersHandler(bundles['http-headers'] as HeadersBundle)
    test('adds the security headers to an origin response, keeping the origin’s own', async () => {
      const out = await handler()(
        originResponse('200', {
          'content-type': 'text/html',
          'content-security-policy': "default-src 'self'",
        }),
      )
      assert.equal(out.status, '200')
      assert.equal(header(out.headers, 'strict-transport-security'), 'max-age=31536000')
      assert.equal(header(out.headers, 'content-security-policy'), "default-src 'self'")
      assert.equal(header(out.headers, 'x-frame-options'), 'SAMEORIGIN')
      assert.equal(header(out.headers, 'referrer-policy'), 'strict-origin-when-cross-origin')
      assert.deepEqual(out.headers['x-content-type-options'], [
        { key: 'X-Content-Type-Options', value: 'nosniff' },
      ])
      assert.equal(header(out.headers, 'content-type'), 'text/html')
      const error = await handler()(originResponse('503', {}))
      assert.equal(error.status, '503')
      assert.equal(header(error.headers, 'x-frame-options'), 'SAMEORIGIN')
    })
    test('refuses to run on a request trigger', async () => {
      await assert.rejects(handler()(originResponse('200', {}, 'viewer-request')), /origin-response trigger/)
      assert.throws(
        () => createHttpHeadersHandler({ function: 'check-auth' } as unknown as HeadersBundle),
        TypeError,
      )
    })
  })

  describe('while the provider is down', () => {
    test('refresh-auth defers without a loop; check-auth serves within the outage grace, then ends the session', async () => {
      const { jar } = await signInAt('/o')
      await idp.close()
      clock.advance((ACCESS_TTL - 300) * 1000)
      const cookie = jar.header()!
      const bounced = generated(await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie } })))
      assert.equal(header(bounced.headers, 'location'), '/oauth2/refresh?rd=%2Fo')
      const deferred = generated(
        await refreshAuth(viewerRequest('/oauth2/refresh?rd=%2Fo', { headers: { ...NAVIGATE, cookie } })),
      )
      assert.equal(deferred.status, '302')
      assert.equal(header(deferred.headers, 'location'), '/o')
      const wait = setCookies(deferred).find((c) => c.startsWith('__Host-gatehouse-refresh-wait='))!
      assert.match(wait, /; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=30$/)
      jar.take(deferred)
      // Not bounced again while the wait cookie lives: served, and the origin never sees that cookie.
      const served = passedOn(
        await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )
      assert.equal(served.headers['cookie'], undefined)
      assert.equal(served.headers['x-gatehouse-degraded'], undefined)
      // The access token expired and the wait is over: one more try at refresh-auth, then, within the
      // outage grace, served with the origin told it is degraded.
      clock.advance(310 * 1000)
      const again = generated(
        await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )
      assert.equal(header(again.headers, 'location'), '/oauth2/refresh?rd=%2Fo')
      jar.take(
        generated(
          await refreshAuth(
            viewerRequest('/oauth2/refresh?rd=%2Fo', { headers: { ...NAVIGATE, cookie: jar.header() } }),
          ),
        ),
      )
      const degraded = passedOn(
        await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )
      assert.equal(header(degraded.headers, 'x-gatehouse-degraded'), 'idp-unavailable')
      // A script refreshing meanwhile gets a clear 503.
      const api = generated(
        await refreshAuth(
          viewerRequest('/oauth2/refresh', {
            method: 'POST',
            headers: { accept: 'application/json', cookie: jar.header() },
          }),
        ),
      )
      assert.equal(api.status, '503')
      assert.equal(JSON.parse(api.body!).error, 'idp_unavailable')
      // A forged wait cookie does nothing.
      const forged = `${cookie}; __Host-gatehouse-refresh-wait=${'x'.repeat(40)}`
      const noWait = generated(
        await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie: forged } })),
      )
      assert.equal(header(noWait.headers, 'location'), '/oauth2/refresh?rd=%2Fo')
      // An API call without the wait cookie is told to refresh, not served on an expired token.
      const script = generated(
        await checkAuth(viewerRequest('/api', { headers: { accept: 'application/json', cookie } })),
      )
      assert.equal(JSON.parse(script.body!).error, 'refresh_required')
      // Past the grace (default 1 h after the access token expired), the session ends: a navigation
      // is sent to sign in again.
      clock.advance(3600 * 1000)
      jar.take(
        generated(
          await refreshAuth(
            viewerRequest('/oauth2/refresh?rd=%2Fo', { headers: { ...NAVIGATE, cookie: jar.header() } }),
          ),
        ),
      )
      const over = generated(
        await checkAuth(viewerRequest('/o', { headers: { ...NAVIGATE, cookie: jar.header() } })),
      )
      assert.equal(over.status, '302')
      assert.ok(header(over.headers, 'location')!.startsWith(`${idp.issuer}/auth`))
      assert.ok(
        setCookies(over).some((c) => c.startsWith('__Host-gatehouse=;') && /Max-Age=0/.test(c)),
        'session cleared',
      )
      const overApi = generated(
        await checkAuth(
          viewerRequest('/api', { headers: { accept: 'application/json', cookie: jar.header() } }),
        ),
      )
      assert.equal(overApi.status, '401')
      assert.equal(JSON.parse(overApi.body!).error, 'session_expired')
    })
  })
})
