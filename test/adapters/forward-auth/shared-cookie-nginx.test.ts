/**
 * Forward-auth behind a real nginx with one sign-in for every app (`session.cookie_domain`, docs/apps.md):
 * nginx sends a browser without a session to Gatehouse at the app host, which sends it on to the sign-in
 * at public_url's host (also behind nginx); after the one callback the domain cookie lets nginx's
 * auth_request pass on both app hosts. Skips loudly when nginx is missing locally; under CI=true it must run.
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
import { createCookieClient } from '../../helpers/cookie-client.ts'
import { installTestHosts } from '../../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { appServerBlock, NGINX, startNginx } from '../../helpers/nginx.ts'
import { signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const missing = !existsSync(NGINX)
if (missing && process.env['CI'] === 'true')
  throw new Error(`nginx is required under CI but ${NGINX} is missing`)
if (missing)
  console.warn(`\n*** SKIPPING the nginx shared-cookie forward-auth test: no nginx at ${NGINX} ***\n`)

const OLGA = { username: 'olga', password: 'ops password 1', groups: ['ops'] }

describe('forward-auth behind nginx: one sign-in at public_url for two app hosts', {
  skip: missing ? `no nginx at ${NGINX}` : false,
}, () => {
  let idp: TestIdP
  let grafana: RecordingUpstream
  let wiki: RecordingUpstream
  let gateway: Gateway
  let nginx: ChildProcess
  let port: number
  const at = (host: string, path: string) => `http://${host}.apps.localhost:${port}${path}`

  before(async () => {
    installTestHosts()
    port = await freePort()
    // One redirect URI, at public_url's host.
    idp = await startTestIdP({ redirectUris: [at('gate', '/oauth2/callback')] })
    await idp.users.add(OLGA.username, OLGA.password, { groups: OLGA.groups })
    ;[grafana, wiki] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
    gateway = await startGateway(
      validateConfig({
        public_url: at('gate', ''),
        data_dir: mkdtempSync(join(tmpdir(), 'gh-fa-shared-')),
        listen: { host: '127.0.0.1', port: 0 },
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
          },
          {
            name: 'wiki',
            host: 'wiki.apps.localhost',
            upstream: wiki.url,
            routes: [{ path: '/*', allow: { groups: ['staff'] } }],
          },
        ],
      }),
      {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        env: { CS: idp.clientSecret, SS: 'forward-auth-shared-secret-0123456789ab' },
      },
    )
    const gate = `
  server {
    listen 127.0.0.1:${port};
    server_name gate.apps.localhost;
    location / {
      proxy_pass ${gateway.url};
      proxy_set_header Host $host:$server_port;
    }
  }`
    nginx = await startNginx(
      [
        gate,
        appServerBlock('grafana.apps.localhost', port, gateway.url, grafana.url),
        appServerBlock('wiki.apps.localhost', port, gateway.url, wiki.url),
      ],
      at('grafana', '/'),
    )
  })

  after(async () => {
    nginx?.kill('SIGTERM')
    await gateway?.close()
    await Promise.all([grafana?.close(), wiki?.close()])
    await idp?.close()
  })

  test('signed in once through the sign-in host, nginx lets the user into grafana and judges the wiki by its own policy', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const first = await browser.request(at('grafana', '/d/1?tab=2'), { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    assert.equal(
      first.headers.get('location'),
      `${at('gate', '/oauth2/sign_in')}?rd=${encodeURIComponent(at('grafana', '/d/1?tab=2'))}`,
    )
    const start = await browser.request(first.headers.get('location')!, { headers: { accept: 'text/html' } })
    assert.equal(start.status, 302)
    const callback = await signIn(
      browser,
      start.headers.get('location')!,
      OLGA.username,
      OLGA.password,
      idp.issuer,
    )
    assert.equal(callback.origin, at('gate', ''))
    const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
    assert.equal(done.response.status, 200)
    assert.equal(done.url, at('grafana', '/d/1?tab=2'))
    assert.equal(grafana.requests.at(-1)!.headers['x-auth-request-preferred-username'], 'olga')
    // The wiki host: no sign-in, the same session, judged by the wiki's routes (olga is not staff).
    const wikiBefore = wiki.requests.length
    const w = await browser.request(at('wiki', '/page'), { headers: { accept: 'text/html' } })
    assert.equal(w.status, 403)
    assert.equal(wiki.requests.length, wikiBefore, 'the wiki was not reached')
  })
})
