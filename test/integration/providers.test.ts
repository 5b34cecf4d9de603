/**
 * Several providers (config `providers`, docs/providers.md): two real oidc-provider instances behind one
 * Node gateway, a recording upstream. The chooser, sign-in with each, the provider sent upstream, the
 * mix-up refusal, and one provider down while the other signs people in.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { type CookieClient, createCookieClient } from '../helpers/cookie-client.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SECRET = 'providers-test-session-secret-0123456789ab'
const OLGA = { username: 'olga', password: 'corp password 1', groups: ['ops'] }
const CARL = { username: 'carl', password: 'contractor password 1', groups: ['contractors'] }
const HTML = { accept: 'text/html' }

describe('providers: two real providers, one down while the other signs in', () => {
  let corp: TestIdP
  let contractors: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let port: number
  // The gateway's clock: real time plus an offset a test moves forward (the providers keep real time).
  let offsetMs = 0
  const url = (path: string) => `http://localhost:${port}${path}`

  /** A browser signed in through `provider` as `user`, starting from the chooser's link. */
  async function signedIn(provider: 'corp' | 'contractors', user: typeof OLGA): Promise<CookieClient> {
    const b = createCookieClient({ fetch: browserFetch })
    const start = await b.request(url(`/oauth2/sign_in?provider=${provider}&rd=/page`), { headers: HTML })
    assert.equal(start.status, 302)
    const idp = provider === 'corp' ? corp : contractors
    const location = start.headers.get('location')!
    assert.ok(location.startsWith(`${idp.issuer}/`), `sent to ${provider}: ${location}`)
    assert.equal(
      new URL(location).searchParams.get('redirect_uri'),
      url(`/oauth2/callback/${provider}`),
      'each provider has its own callback',
    )
    const callback = await signIn(b, location, user.username, user.password, idp.issuer)
    assert.equal(callback.pathname, `/oauth2/callback/${provider}`)
    const back = await b.request(callback, { headers: HTML })
    assert.equal(back.status, 302, await back.text())
    assert.equal(back.headers.get('location'), '/page')
    return b
  }

  before(async () => {
    port = await freePort()
    const idpOptions = (name: string) => ({
      redirectUris: [`http://localhost:${port}/oauth2/callback/${name}`],
      // Short access tokens: a test moves the gateway's clock past them to force a refresh.
      accessTokenTtlSeconds: 120,
      idTokenTtlSeconds: 3600,
    })
    ;[corp, contractors] = await Promise.all([
      startTestIdP({ ...idpOptions('corp'), clientId: 'gatehouse-corp' }),
      startTestIdP({ ...idpOptions('contractors'), clientId: 'gatehouse-contractors' }),
    ])
    await corp.users.add(OLGA.username, OLGA.password, { groups: OLGA.groups })
    await contractors.users.add(CARL.username, CARL.password, { groups: CARL.groups })
    upstream = await startRecordingUpstream()
    const provider = (name: string, title: string, idp: TestIdP, env: string) => ({
      name,
      title,
      issuer: idp.issuer,
      client_id: idp.clientId,
      client_secret: { env },
      scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    })
    const config = validateConfig({
      public_url: `http://localhost:${port}`,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-providers-')),
      providers: [
        provider('corp', 'Company account', corp, 'CORP_SECRET'),
        provider('contractors', 'Contractor account', contractors, 'CONTRACTOR_SECRET'),
      ],
      session: { secrets: [{ env: 'SS' }], refresh_before: '30s' },
      lifetimes: DEV_LIFETIMES,
      routes: [{ path: '/ops/*', allow: { groups: ['ops'] } }],
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: { host: '127.0.0.1', port: 0 },
      listen: { host: '127.0.0.1', port },
      clock: { now: () => Date.now() + offsetMs },
      env: { CORP_SECRET: corp.clientSecret, CONTRACTOR_SECRET: contractors.clientSecret, SS: SECRET },
    })
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await Promise.all([corp?.close(), contractors?.close()])
  })

  test('without a session: a navigation goes to the chooser, which offers each provider; nothing reaches the upstream', async () => {
    const seen = upstream.requests.length
    const b = createCookieClient({ fetch: browserFetch })
    const nav = await b.request(url('/page?x=1'), { headers: HTML })
    assert.equal(nav.status, 302)
    assert.equal(nav.headers.get('location'), '/oauth2/sign_in?rd=%2Fpage%3Fx%3D1')
    const page = await b.request(url('/oauth2/sign_in?rd=%2Fpage%3Fx%3D1'), { headers: HTML })
    assert.equal(page.status, 200)
    assert.equal(page.headers.get('cache-control'), 'no-store')
    const html = await page.text()
    assert.match(
      html,
      /<a href="\/oauth2\/sign_in\?provider=corp&amp;rd=%2Fpage%3Fx%3D1">Company account<\/a>/,
    )
    assert.match(
      html,
      /<a href="\/oauth2\/sign_in\?provider=contractors&amp;rd=%2Fpage%3Fx%3D1">Contractor account<\/a>/,
    )
    // A script asking gets the same choice as JSON.
    const asJson = await fetch(url('/oauth2/sign_in?rd=/page'))
    assert.equal(asJson.status, 200)
    assert.deepEqual(await asJson.json(), {
      providers: [
        { name: 'corp', title: 'Company account', sign_in: '/oauth2/sign_in?provider=corp&rd=%2Fpage' },
        {
          name: 'contractors',
          title: 'Contractor account',
          sign_in: '/oauth2/sign_in?provider=contractors&rd=%2Fpage',
        },
      ],
    })
    // An API call gets a 401, never the chooser.
    const api = await fetch(url('/page'))
    assert.equal(api.status, 401)
    // A provider that is not configured: 400 with the choice again.
    const unknown = await fetch(url('/oauth2/sign_in?provider=evil&rd=/'), { headers: HTML })
    assert.equal(unknown.status, 400)
    const unknownHtml = await unknown.text()
    assert.match(unknownHtml, /unknown_provider/)
    assert.match(unknownHtml, /provider=corp&amp;rd=%2F">Company account</)
    // Without a provider name, the callback and logout endpoints do not exist.
    assert.equal((await fetch(url('/oauth2/callback?state=x&code=y'))).status, 404)
    assert.equal((await fetch(url('/oauth2/callback/evil?state=x&code=y'))).status, 404)
    assert.equal(upstream.requests.length, seen, 'the upstream was not reached')
  })

  test('a user of each provider signs in; the upstream hears which provider, never a client-sent one', async () => {
    const olga = await signedIn('corp', OLGA)
    const carl = await signedIn('contractors', CARL)
    const spoof = { 'x-auth-request-provider': 'corp', 'x-auth-request-user': 'olga' }
    const a = await olga.request(url('/page'), { headers: spoof })
    assert.equal(a.status, 200)
    const seenA = upstream.requests.at(-1)!
    assert.equal(seenA.headers['x-auth-request-provider'], 'corp')
    assert.equal(seenA.headers['x-auth-request-preferred-username'], 'olga')
    const c = await carl.request(url('/page'), { headers: spoof })
    assert.equal(c.status, 200)
    const seenC = upstream.requests.at(-1)!
    assert.equal(seenC.headers['x-auth-request-provider'], 'contractors', 'the spoofed header was dropped')
    assert.equal(seenC.headers['x-auth-request-preferred-username'], 'carl')
    // Policy is the same for both: groups decide.
    const seen = upstream.requests.length
    assert.equal((await carl.request(url('/ops/board'))).status, 403)
    assert.equal((await olga.request(url('/ops/board'))).status, 200)
    assert.equal(upstream.requests.length, seen + 1)
    const info = (await (await carl.request(url('/oauth2/userinfo'))).json()) as { provider: string }
    assert.equal(info.provider, 'contractors')
  })

  test('mix-up: an answer for one provider delivered to the other provider`s callback is refused', async () => {
    const b = createCookieClient({ fetch: browserFetch })
    const start = await b.request(url('/oauth2/sign_in?provider=contractors&rd=/page'), { headers: HTML })
    const callback = await signIn(b, start.headers.get('location')!, CARL.username, CARL.password)
    assert.equal(callback.pathname, '/oauth2/callback/contractors')
    const moved = new URL(callback)
    moved.pathname = '/oauth2/callback/corp'
    const refused = await b.request(moved, { headers: HTML })
    assert.equal(refused.status, 400)
    assert.match(await refused.text(), /invalid_state/)
    assert.equal(b.cookies(url('/')).filter((c) => c.name === 'gatehouse').length, 0, 'no session')
  })

  test('contractors down: corp signs in and refreshes; contractors sign-in gets 503, its sessions ride the outage grace', async () => {
    const olga = await signedIn('corp', OLGA)
    const carl = await signedIn('contractors', CARL)
    await contractors.close()
    // The next look at the contractors provider fails: its copies are marked stale, its breaker counts.
    await gateway.providers[1]!.cache.refreshNow().catch(() => {})

    const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as {
      checks: Record<string, string>
    }
    assert.equal(ready.checks['provider:corp'], 'ok')
    assert.match(ready.checks['provider:contractors']!, /^degraded: /)
    const status = (await (await fetch(`${gateway.adminUrl}/status.json`)).json()) as {
      providers: Array<{ name: string; state: string }>
    }
    assert.deepEqual(
      status.providers.map((p) => [p.name, p.state]),
      [
        ['corp', 'ok'],
        ['contractors', 'degraded'],
      ],
    )
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text()
    assert.match(metrics, /gatehouse_provider_copy_age_seconds\{provider="contractors",what="jwks"\}/)
    assert.match(metrics, /gatehouse_provider_breaker_open\{provider="corp"\} 0/)

    // A new contractors sign-in: a clear 503 with the way back to the chooser, no redirect to a dead provider.
    const b = createCookieClient({ fetch: browserFetch })
    const down = await b.request(url('/oauth2/sign_in?provider=contractors&rd=/page'), { headers: HTML })
    assert.equal(down.status, 503)
    assert.equal(down.headers.get('retry-after'), '30')
    const text = await down.text()
    assert.match(text, /idp_unavailable/)
    assert.match(text, /Contractor account is unavailable/)
    assert.match(text, /<a href="\/oauth2\/sign_in">Sign in another way<\/a>/)
    // Corp signs a new user in meanwhile.
    const olga2 = await signedIn('corp', OLGA)
    assert.equal((await olga2.request(url('/page'))).status, 200)

    // Past the access tokens' lifetime: corp refreshes; contractors cannot, and its session is served
    // under the outage grace, marked degraded to the upstream.
    offsetMs = 130_000
    try {
      const o = await olga.request(url('/page'))
      assert.equal(o.status, 200)
      assert.equal(upstream.requests.at(-1)!.headers['x-gatehouse-degraded'], undefined)
      assert.ok(
        o.headers.getSetCookie().some((c) => c.startsWith('gatehouse=')),
        'corp session refreshed',
      )
      const c = await carl.request(url('/page'))
      assert.equal(c.status, 200)
      const seen = upstream.requests.at(-1)!
      assert.equal(seen.headers['x-auth-request-provider'], 'contractors')
      assert.equal(seen.headers['x-gatehouse-degraded'], 'idp-unavailable')
    } finally {
      offsetMs = 0
    }
  })
})
