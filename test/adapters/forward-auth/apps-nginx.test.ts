/**
 * Forward-auth for several apps behind a real nginx: two server_names in one nginx config, both asking
 * one Gatehouse /oauth2/auth, which judges each request by the app its X-Forwarded-Host names
 * (config `apps`, docs/apps.md). Skips loudly when nginx is missing locally; under CI=true it must run.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../../src/app.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/load.ts'
import { silentLogger } from '../../../src/core/ports.ts'
import { browserFetch } from '../../helpers/browser-fetch.ts'
import { type CookieClient, createCookieClient } from '../../helpers/cookie-client.ts'
import { installTestHosts } from '../../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { appServerBlock, NGINX, startNginx } from '../../helpers/nginx.ts'
import { signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const missing = !existsSync(NGINX)
if (missing && process.env['CI'] === 'true')
  throw new Error(`nginx is required under CI but ${NGINX} is missing`)
if (missing) console.warn(`\n*** SKIPPING the nginx apps forward-auth test: no nginx at ${NGINX} ***\n`)

const OLGA = { username: 'olga', password: 'ops password 1', groups: ['ops'] }

describe('forward-auth behind nginx: two apps judged by X-Forwarded-Host', {
  skip: missing ? `no nginx at ${NGINX}` : false,
}, () => {
  let idp: TestIdP
  let grafana: RecordingUpstream
  let wiki: RecordingUpstream
  let gateway: Gateway
  let nginx: ChildProcess
  let port: number
  const at = (host: string, path: string) => `http://${host}:${port}${path}`

  async function signInThrough(browser: CookieClient, host: string, path: string) {
    const first = await browser.request(at(host, path), { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302, `${host}${path}: nginx sends a browser without a session to sign in`)
    const callback = await signIn(
      browser,
      first.headers.get('location')!,
      OLGA.username,
      OLGA.password,
      idp.issuer,
    )
    assert.equal(callback.origin, `http://${host}:${port}`)
    return browser.follow(callback, { headers: { accept: 'text/html' } })
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
    await idp.users.add(OLGA.username, OLGA.password, { groups: OLGA.groups })
    ;[grafana, wiki] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
    gateway = await startGateway(
      validateConfig({
        public_url: `http://localhost:${port}`,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-fa-apps-')),
        listen: { host: '127.0.0.1', port: 0 },
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
            routes: [{ path: '/*', allow: { groups: ['staff'] } }],
          },
        ],
      }),
      {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        env: { CS: idp.clientSecret, SS: 'forward-auth-apps-secret-0123456789abcd' },
      },
    )
    nginx = await startNginx(
      [
        appServerBlock('grafana.localhost', port, gateway.url, grafana.url),
        appServerBlock('wiki.localhost', port, gateway.url, wiki.url),
      ],
      at('grafana.localhost', '/'),
    )
  })

  after(async () => {
    nginx?.kill('SIGTERM')
    await gateway?.close()
    await Promise.all([grafana?.close(), wiki?.close()])
    await idp?.close()
  })

  test('a user in ops is let into grafana and refused by the wiki, each by its own policy', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const g = await signInThrough(browser, 'grafana.localhost', '/d/1?tab=2')
    assert.equal(g.response.status, 200)
    assert.equal(g.url, at('grafana.localhost', '/d/1?tab=2'))
    assert.equal(grafana.requests.at(-1)!.headers['x-auth-request-preferred-username'], 'olga')
    const wikiBefore = wiki.requests.length
    // Same nginx, same Gatehouse, another host: its own sign-in (host-only cookie), then its own verdict.
    const w = await signInThrough(browser, 'wiki.localhost', '/page')
    assert.equal(w.response.status, 403)
    assert.equal(wiki.requests.length, wikiBefore, 'the wiki was not reached')
    const grafanaBefore = grafana.requests.length
    assert.equal((await browser.request(at('grafana.localhost', '/d/2'))).status, 200)
    assert.equal(grafana.requests.length, grafanaBefore + 1)
  })

  test("a check for a host no app serves is 403 unknown_app, never another app's verdict", async () => {
    const r = await fetch(`${gateway.url}/oauth2/auth`, {
      headers: { 'x-forwarded-host': 'other.localhost', 'x-forwarded-uri': '/', accept: 'application/json' },
    })
    assert.equal(r.status, 403)
    assert.equal(((await r.json()) as { error: string }).error, 'unknown_app')
    const none = await fetch(`${gateway.url}/oauth2/auth`, { headers: { 'x-forwarded-uri': '/' } })
    assert.equal(none.status, 400)
    assert.equal(((await none.json()) as { error: string }).error, 'missing_forwarded_host')
  })
})
