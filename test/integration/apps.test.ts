/**
 * Several apps behind one Node gateway (config `apps`, docs/apps.md): a real provider, three recording
 * upstreams, two hosts (one with a path-prefixed app), users in different groups. Host names
 * `*.localhost` resolve to loopback, so the requests carry the hosts a browser would send.
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
import { installTestHosts, rawRequest } from '../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SECRET = 'apps-test-session-secret-0123456789abcdef'
const OLGA = { username: 'olga', password: 'ops password 1', groups: ['ops'] }
const SAM = { username: 'sam', password: 'staff password 1', groups: ['staff'] }

describe('apps: two hosts, a path-prefixed app, users in different groups', () => {
  let idp: TestIdP
  let grafana: RecordingUpstream
  let wiki: RecordingUpstream
  let opsboard: RecordingUpstream
  let gateway: Gateway
  let port: number
  const at = (host: string, path: string) => `http://${host}:${port}${path}`
  const counts = () => [grafana.requests.length, wiki.requests.length, opsboard.requests.length]

  /** A browser signed in as `user` at `host` (sign-in is per app host in this step). */
  async function signedIn(user: typeof OLGA, host: string, browser?: CookieClient): Promise<CookieClient> {
    const b = browser ?? createCookieClient({ fetch: browserFetch })
    const first = await b.request(at(host, '/oauth2/sign_in?rd=/'), { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    const callback = await signIn(b, first.headers.get('location')!, user.username, user.password, idp.issuer)
    assert.equal(callback.origin, `http://${host}:${port}`, 'the provider calls back to the app host')
    const back = await b.request(callback, { headers: { accept: 'text/html' } })
    assert.equal(back.status, 302, await back.text())
    return b
  }

  before(async () => {
    installTestHosts()
    port = await freePort()
    idp = await startTestIdP({
      redirectUris: [
        `http://grafana.localhost:${port}/oauth2/callback`,
        `http://wiki.localhost:${port}/oauth2/callback`,
      ],
    })
    for (const u of [OLGA, SAM]) await idp.users.add(u.username, u.password, { groups: u.groups })
    ;[grafana, wiki, opsboard] = await Promise.all([
      startRecordingUpstream(),
      startRecordingUpstream(),
      startRecordingUpstream(),
    ])
    const config = validateConfig({
      public_url: `http://localhost:${port}`,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-apps-')),
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CS' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'SS' }] },
      lifetimes: DEV_LIFETIMES,
      apps: [
        {
          name: 'grafana',
          host: 'grafana.localhost',
          upstream: grafana.url,
          routes: [{ path: '/*', allow: { groups: ['ops'] } }],
        },
        {
          name: 'wiki',
          host: 'wiki.localhost',
          upstream: wiki.url,
          routes: [
            { path: '/public/*', allow: 'anonymous' },
            { path: '/*', allow: { groups: ['staff'] } },
          ],
        },
        {
          name: 'opsboard',
          host: 'wiki.localhost',
          path_prefix: '/ops/',
          upstream: opsboard.url,
          routes: [{ path: '/ops/*', allow: { groups: ['ops'] } }],
          identity: { pass_access_token: true },
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
    await Promise.all([grafana?.close(), wiki?.close(), opsboard?.close()])
    await idp?.close()
  })

  test('a user in ops reaches grafana and the /ops app, not the wiki; each request reaches its own upstream only', async () => {
    const olga = await signedIn(OLGA, 'grafana.localhost')
    let before = counts()
    const g = await olga.request(at('grafana.localhost', '/d/1?x=1'))
    assert.equal(g.status, 200)
    assert.equal(((await g.json()) as { path: string }).path, '/d/1?x=1')
    assert.deepEqual(counts(), [before[0]! + 1, before[1], before[2]])
    const seen = grafana.requests.at(-1)!
    assert.equal(seen.headers['x-auth-request-preferred-username'], 'olga')
    assert.equal(seen.headers['host'], `grafana.localhost:${port}`, "the upstream hears its app's host")
    assert.equal(seen.headers['x-forwarded-host'], `grafana.localhost:${port}`)
    assert.equal(seen.headers['x-auth-request-access-token'], undefined, 'grafana does not get the token')

    // The session cookie is host-only: wiki.localhost needs its own sign-in (no password: the provider's session).
    const noSession = await olga.request(at('wiki.localhost', '/page'), { headers: { accept: 'text/html' } })
    assert.equal(noSession.status, 302)
    assert.ok(noSession.headers.get('location')!.startsWith(idp.issuer))
    await signedIn(OLGA, 'wiki.localhost', olga)

    before = counts()
    const w = await olga.request(at('wiki.localhost', '/page'))
    assert.equal(w.status, 403)
    assert.equal(((await w.json()) as { error: string }).error, 'forbidden')
    assert.deepEqual(counts(), before, 'no upstream reached')

    const o = await olga.request(at('wiki.localhost', '/ops/board'))
    assert.equal(o.status, 200)
    assert.deepEqual(counts(), [before[0], before[1], before[2]! + 1], 'only the /ops upstream')
    const board = opsboard.requests.at(-1)!
    assert.equal(board.url, '/ops/board', 'the path is forwarded unchanged, prefix and all')
    assert.equal(board.headers['x-auth-request-preferred-username'], 'olga')
    assert.ok(board.headers['x-auth-request-access-token'], "the /ops app's identity options pass the token")

    // The wiki's anonymous route is the wiki's: served without a policy check, to the wiki only.
    before = counts()
    assert.equal((await olga.request(at('wiki.localhost', '/public/x'))).status, 200)
    assert.deepEqual(counts(), [before[0], before[1]! + 1, before[2]])
  })

  test('a user in staff reaches the wiki, not grafana nor /ops', async () => {
    const sam = await signedIn(SAM, 'wiki.localhost')
    let before = counts()
    const w = await sam.request(at('wiki.localhost', '/page'))
    assert.equal(w.status, 200)
    assert.deepEqual(counts(), [before[0], before[1]! + 1, before[2]])
    before = counts()
    assert.equal((await sam.request(at('wiki.localhost', '/ops/board'))).status, 403)
    assert.equal((await sam.request(at('wiki.localhost', '/ops'))).status, 403)
    await signedIn(SAM, 'grafana.localhost', sam)
    assert.equal((await sam.request(at('grafana.localhost', '/'))).status, 403)
    assert.deepEqual(counts(), before, 'no upstream reached')
  })

  test('a host no app serves gets 421 misdirected_request, and no upstream is reached', async () => {
    const before = counts()
    const r = await browserFetch(at('other.localhost', '/'))
    assert.equal(r.status, 421)
    assert.equal(((await r.json()) as { error: string }).error, 'misdirected_request')
    // public_url's host serves no app either: with apps, only app hosts are apps.
    assert.equal((await browserFetch(at('localhost', '/'))).status, 421)
    assert.deepEqual(counts(), before)
  })

  test('over a raw socket, dot segments and escapes cannot carry a request into another app', async () => {
    const sam = await signedIn(SAM, 'wiki.localhost')
    const cookie = sam
      .cookies(at('wiki.localhost', '/'))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    const get = (target: string) =>
      rawRequest(port, `GET ${target} HTTP/1.1\r\nhost: wiki.localhost:${port}\r\ncookie: ${cookie}\r\n`)
    let before = counts()
    // Judged (and served) by the wiki, which owns /secret once the path is resolved: sam is in staff.
    for (const target of ['/ops/../secret', '/ops/%2e%2e/secret', '/ops/%2E%2E/secret']) {
      const r = await get(target)
      assert.equal(r.status, 200, `${target}: ${r.text}`)
      assert.equal(wiki.requests.at(-1)!.url, '/secret', target)
    }
    assert.deepEqual(counts(), [before[0], before[1]! + 3, before[2]], 'the /ops upstream never reached')
    // And the other way: into /ops from outside it is judged by /ops (sam is not in ops).
    before = counts()
    for (const target of ['/x/../ops/board', '/%6Fps/board', '/ops;x/board', '/ops./board', '//ops/board']) {
      const r = await get(target)
      assert.equal(r.status, 403, `${target}: ${r.text}`)
    }
    assert.deepEqual(counts(), before, 'no upstream reached')
  })

  test('decisions are counted per app', async () => {
    const text = await gateway.metrics.registry.metrics()
    assert.match(text, /gatehouse_app_decisions_total\{app="grafana",kind="allow",code="allow"\} [1-9]/)
    assert.match(text, /gatehouse_app_decisions_total\{app="wiki",kind="respond",code="forbidden"\} [1-9]/)
  })
})
