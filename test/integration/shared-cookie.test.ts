/**
 * One sign-in for every app (config `session.cookie_domain`, docs/apps.md): apps on two hosts under one
 * domain, sign-in at public_url's host with the one callback registered at a real provider, the session
 * cookie sent to every app host, sign-out ending it everywhere. Host names `*.localhost` are loopback.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeJwt } from 'jose'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { installTestHosts } from '../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SECRET = 'shared-cookie-test-session-secret-0123456789'
const OLGA = { username: 'olga', password: 'ops password 1', groups: ['ops'] }
const HTML = { accept: 'text/html' }

describe('session.cookie_domain: one sign-in for every app under the domain', () => {
  let idp: TestIdP
  let grafana: RecordingUpstream
  let wiki: RecordingUpstream
  let gateway: Gateway
  let port: number
  const at = (host: string, path: string) => `http://${host}.apps.localhost:${port}${path}`
  const counts = () => [grafana.requests.length, wiki.requests.length]

  before(async () => {
    installTestHosts()
    port = await freePort()
    idp = await startTestIdP({
      // The one callback: sign-in happens at public_url's host for every app.
      redirectUris: [`http://gate.apps.localhost:${port}/oauth2/callback`],
      postLogoutRedirectUris: [`http://wiki.apps.localhost:${port}/`],
    })
    await idp.users.add(OLGA.username, OLGA.password, { groups: OLGA.groups })
    ;[grafana, wiki] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
    const config = validateConfig({
      public_url: `http://gate.apps.localhost:${port}`,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-shared-cookie-')),
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CS' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'SS' }], cookie_domain: 'apps.localhost' },
      lifetimes: DEV_LIFETIMES,
      apps: [
        {
          name: 'grafana',
          host: 'grafana.apps.localhost',
          upstream: grafana.url,
          routes: [{ path: '/*', allow: { groups: ['ops'] } }],
          identity: { headers_from_claims: { 'X-User-Name': 'preferred_username' } },
        },
        {
          name: 'wiki',
          host: 'wiki.apps.localhost',
          upstream: wiki.url,
          // Its own claim header and an assertion for its own origin; grafana gets neither.
          identity: {
            headers_from_claims: { 'X-User-Groups-Claim': 'groups' },
            assertion: { enabled: true },
          },
        },
      ],
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      listen: { host: '127.0.0.1', port },
      env: { CS: idp.clientSecret, SS: SECRET },
    })
  })

  after(async () => {
    await gateway?.close()
    await Promise.all([grafana?.close(), wiki?.close()])
    await idp?.close()
  })

  test('signed in once at public_url, a user reaches both app hosts; sign-out at one ends it at both', async () => {
    const b = createCookieClient({ fetch: browserFetch })
    const nav = await b.request(at('grafana', '/d/1?x=1'), { headers: HTML })
    assert.equal(nav.status, 302)
    assert.equal(
      nav.headers.get('location'),
      `${at('gate', '/oauth2/sign_in')}?rd=${encodeURIComponent(at('grafana', '/d/1?x=1'))}`,
    )
    const start = await b.request(nav.headers.get('location')!, { headers: HTML })
    assert.equal(start.status, 302)
    const authorize = new URL(start.headers.get('location')!)
    assert.equal(authorize.searchParams.get('redirect_uri'), at('gate', '/oauth2/callback'))
    const callback = await signIn(b, authorize, OLGA.username, OLGA.password, idp.issuer)
    assert.equal(callback.origin, `http://gate.apps.localhost:${port}`)
    const back = await b.request(callback, { headers: HTML })
    assert.equal(back.status, 302, await back.text())
    assert.equal(back.headers.get('location'), at('grafana', '/d/1?x=1'), 'back to the app it started at')
    const set = back.headers.getSetCookie().find((c) => c.startsWith('gatehouse='))!
    assert.match(set, /; Domain=apps\.localhost/)
    assert.match(set, /; HttpOnly/)

    const before = counts()
    const spoof = { 'x-user-groups-claim': 'admins', 'x-user-name': 'root' }
    const g = await b.request(at('grafana', '/d/1?x=1'), { headers: spoof })
    assert.equal(g.status, 200)
    const seenG = grafana.requests.at(-1)!
    assert.equal(seenG.headers['x-auth-request-preferred-username'], 'olga')
    // Each app's own claim headers, though the session was signed in at public_url (which names none).
    assert.equal(seenG.headers['x-user-name'], 'olga')
    assert.equal(seenG.headers['x-user-groups-claim'], undefined, "another app's claim header is dropped")
    assert.equal(seenG.headers['x-gatehouse-assertion'], undefined)
    // No second sign-in: the cookie is the domain's.
    const w = await b.request(at('wiki', '/page'), { headers: { ...HTML, ...spoof } })
    assert.equal(w.status, 200)
    const seenW = wiki.requests.at(-1)!
    assert.equal(seenW.headers['x-auth-request-preferred-username'], 'olga')
    assert.equal(seenW.headers['x-user-groups-claim'], 'ops')
    assert.equal(seenW.headers['x-user-name'], undefined)
    const assertion = decodeJwt(String(seenW.headers['x-gatehouse-assertion']))
    assert.equal(
      assertion.aud,
      at('wiki', '').replace(/\/$/, ''),
      "the assertion's audience is the wiki's origin",
    )
    assert.deepEqual(counts(), [before[0]! + 1, before[1]! + 1])
    const copied = b.cookies(at('wiki', '/')).find((c) => c.name === 'gatehouse')!.value

    // Sign out at the wiki: the domain cookie is cleared, and the session is refused on grafana too.
    const out = await b.request(at('wiki', '/oauth2/sign_out?rd=/'), { headers: HTML })
    assert.equal(out.status, 302)
    const cleared = out.headers.getSetCookie().find((c) => c.startsWith('gatehouse='))!
    assert.match(cleared, /Max-Age=0/)
    assert.match(cleared, /; Domain=apps\.localhost/)
    const end = new URL(out.headers.get('location')!)
    assert.equal(end.searchParams.get('post_logout_redirect_uri'), at('wiki', '/'))
    const seen = counts()
    const again = await browserFetch(at('grafana', '/d/1'), {
      headers: { cookie: `gatehouse=${copied}`, accept: 'application/json' },
    })
    assert.equal(again.status, 401)
    assert.equal(((await again.json()) as { error: string }).error, 'session_revoked')
    assert.deepEqual(counts(), seen, 'no upstream reached')
  })

  test('the way back goes only to an app origin: any other URL falls back to a path', async () => {
    // At the sign-in host: a foreign or look-alike absolute rd is not kept in the attempt.
    for (const rd of [
      'http://evil.example/x',
      `http://grafana.apps.localhost.evil.example:${port}/`,
      `http://evil@grafana.apps.localhost:${port}/`,
      `http://grafana.apps.localhost:${port + 1}/`,
      `https://grafana.apps.localhost:${port}/`,
      `http:/\\grafana.apps.localhost:${port}/`,
      `//grafana.apps.localhost:${port}/`,
    ]) {
      const b = createCookieClient({ fetch: browserFetch })
      const start = await b.request(`${at('gate', '/oauth2/sign_in')}?rd=${encodeURIComponent(rd)}`, {
        headers: HTML,
      })
      assert.equal(start.status, 302, rd)
      const callback = await signIn(
        b,
        start.headers.get('location')!,
        OLGA.username,
        OLGA.password,
        idp.issuer,
      )
      const back = await b.request(callback, { headers: HTML })
      assert.equal(back.headers.get('location'), '/', rd)
    }
    // At an app host: the way back is that app's own origin.
    const b = createCookieClient({ fetch: browserFetch })
    const r = await b.request(
      `${at('wiki', '/oauth2/sign_in')}?rd=${encodeURIComponent('http://evil.example/')}`,
    )
    assert.equal(r.status, 302)
    assert.equal(
      r.headers.get('location'),
      `${at('gate', '/oauth2/sign_in')}?rd=${encodeURIComponent(at('wiki', '/'))}`,
    )
  })

  test('the sign-in host serves Gatehouse only: any other path there is 404 no_app, no upstream reached', async () => {
    const before = counts()
    const r = await browserFetch(at('gate', '/d/1'))
    assert.equal(r.status, 404)
    assert.equal(((await r.json()) as { error: string }).error, 'no_app')
    assert.equal((await browserFetch(at('gate', '/.well-known/jwks.json'))).status, 200)
    assert.equal((await browserFetch(at('other', '/'))).status, 421)
    assert.deepEqual(counts(), before)
  })
})
