/**
 * The fetch handler run under Node's own Request/Response (as Workers, Deno and Bun would run it),
 * against a real oidc-provider and a real upstream: sign-in, identity headers, refresh-free reuse,
 * bearer tokens, refusals that never reach the upstream.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createFetchHandler } from '../../../src/adapters/fetch/handler.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/validate.ts'
import { browserFetch } from '../../helpers/browser-fetch.ts'
import { fetchHandlerBrowser } from '../../helpers/cookie-client.ts'
import { type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const BASE = 'http://localhost:8787'

describe('createFetchHandler under Node Request/Response', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let handle: (request: Request) => Promise<Response>

  /** A browser whose requests to BASE go to the handler (as an edge runtime would), the rest to the network. */
  const browser = () => fetchHandlerBrowser(BASE, (request) => handle(request), browserFetch)

  before(async () => {
    idp = await startTestIdP({ redirectUris: [`${BASE}/oauth2/callback`] })
    upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: BASE,
      upstream: `${upstream.url}/app`,
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CLIENT_SECRET' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'SESSION_SECRET' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [{ path: '/admin/*', allow: { groups: ['nobody'] } }],
      identity: { pass_access_token: true },
    })
    handle = await createFetchHandler(config, {
      env: { CLIENT_SECRET: idp.clientSecret, SESSION_SECRET: 'fetch-handler-session-secret-0123456789ab' },
    })
  })

  after(async () => {
    await upstream?.close()
    await idp?.close()
  })

  test('sign in through the provider and reach the upstream with identity headers', async () => {
    const b = browser()
    const first = await b.request(`${BASE}/page?x=1`, { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    const callback = await signIn(
      b,
      first.headers.get('location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    const done = await b.follow(callback, { headers: { accept: 'text/html' } })
    assert.equal(done.response.status, 200)
    assert.equal(done.url, `${BASE}/page?x=1`)
    const seen = upstream.requests.at(-1)!
    assert.equal(seen.url, '/app/page?x=1', 'the upstream base path is kept')
    assert.equal(seen.headers['x-auth-request-email'], DEMO_USER.email)
    assert.equal(seen.headers['x-auth-request-groups'], 'admins,staff')
    assert.equal(seen.headers['x-forwarded-host'], 'localhost:8787')
    assert.ok(!String(seen.headers.cookie ?? '').includes('gatehouse'), 'no Gatehouse cookie upstream')
    assert.equal(done.response.headers.get('x-content-type-options'), 'nosniff')

    // Spoofed identity headers are replaced; a POST body streams through.
    const post = await b.request(`${BASE}/submit`, {
      method: 'POST',
      body: 'a=1',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-auth-request-user': 'root' },
    })
    assert.equal(post.status, 200)
    assert.notEqual(upstream.requests.at(-1)!.headers['x-auth-request-user'], 'root')
    assert.equal(upstream.requests.at(-1)!.method, 'POST')

    // The provider's access token works as a bearer token on its own.
    const token = String(upstream.requests.at(-1)!.headers['x-auth-request-access-token'])
    const api = await handle(new Request(`${BASE}/api`, { headers: { authorization: `Bearer ${token}` } }))
    assert.equal(api.status, 200)
  })

  test('refusals never reach the upstream: 401 for API calls, 403 by policy, 400 for bad paths', async () => {
    const count = upstream.requests.length
    const r401 = await handle(new Request(`${BASE}/api/items`, { headers: { accept: 'application/json' } }))
    assert.equal(r401.status, 401)
    assert.equal(r401.headers.get('www-authenticate'), 'Bearer realm="gatehouse"')
    const bad = await handle(
      new Request(`${BASE}/api/x`, { headers: { authorization: 'Bearer not.a.token' } }),
    )
    assert.equal(bad.status, 401)
    assert.match(bad.headers.get('www-authenticate')!, /error="invalid_token"/)
    const slash = await handle(new Request(`${BASE}/a%2F..%2Fadmin`))
    assert.equal(slash.status, 400)
    const b = browser()
    const first = await b.request(`${BASE}/`, { headers: { accept: 'text/html' } })
    const callback = await signIn(
      b,
      first.headers.get('location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    await b.follow(callback, { headers: { accept: 'text/html' } })
    const before403 = upstream.requests.length
    const forbidden = await b.request(`${BASE}/admin/x`, { headers: { accept: 'application/json' } })
    assert.equal(forbidden.status, 403)
    assert.equal(upstream.requests.length, before403)
    assert.equal(count + 1, before403, 'only the signed-in page reached the upstream')
  })

  test('a client repeating a refused token is answered later (a timer), with the same precise 401', async (t) => {
    const token = 'Bearer repeated.bad.token'
    const ask = () => handle(new Request(`${BASE}/api/x`, { headers: { authorization: token } }))
    // The first answer and five free repeats come at once.
    for (let i = 0; i < 6; i++) assert.equal((await ask()).status, 401)
    t.mock.timers.enable({ apis: ['setTimeout'] })
    let settled = false
    const held = ask().then((r) => {
      settled = true
      return r
    })
    for (let i = 0; i < 20; i++) await Promise.resolve()
    await new Promise((r) => setImmediate(r))
    assert.equal(settled, false, 'held until its timer fires')
    t.mock.timers.tick(50)
    const r = await held
    assert.equal(r.status, 401)
    assert.match(r.headers.get('www-authenticate')!, /error="invalid_token"/)
  })

  test("provider.ca is refused at construction: the runtime's own trust applies", async () => {
    const config = validateConfig({
      public_url: BASE,
      upstream: upstream.url,
      provider: { issuer: idp.issuer, client_id: 'c', client_secret: { env: 'S' }, ca: 'ca.pem' },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
    })
    await assert.rejects(
      createFetchHandler(config, { env: { S: 'x'.repeat(40) } }),
      /provider\.ca: is not supported/,
    )
  })

  test('a file secret is refused at construction with the path named', async () => {
    const config = validateConfig({
      public_url: BASE,
      upstream: upstream.url,
      provider: { issuer: idp.issuer, client_id: 'c', client_secret: { file: '/etc/secret' } },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
    })
    await assert.rejects(
      createFetchHandler(config, { env: { S: 'x'.repeat(40) } }),
      /provider.client_secret: expected \{ env: NAME \}/,
    )
  })
})
