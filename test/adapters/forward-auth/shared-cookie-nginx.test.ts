/**
 * Forward-auth behind a real nginx with one sign-in for every app (`session.cookie_domain`, docs/apps.md):
 * nginx sends a browser without a session to Gatehouse at the app host, which sends it on to the sign-in
 * at public_url's host (also behind nginx); after the one callback the domain cookie lets nginx's
 * auth_request pass on both app hosts. Skips loudly when nginx is missing locally; under CI=true it must run.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
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
import { signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const NGINX = process.env['NGINX_PATH'] ?? '/usr/sbin/nginx'
const missing = !existsSync(NGINX)
if (missing && process.env['CI'] === 'true')
  throw new Error(`nginx is required under CI but ${NGINX} is missing`)
if (missing)
  console.warn(`\n*** SKIPPING the nginx shared-cookie forward-auth test: no nginx at ${NGINX} ***\n`)

/** One server block per app, as docs/apps.md shows it; both send X-Forwarded-Host $host to the check. */
function server(name: string, port: number, gatehouse: string, app: string): string {
  return `
  server {
    listen 127.0.0.1:${port};
    server_name ${name};
    location /oauth2/ {
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
    }
    location = /oauth2/auth {
      internal;
      proxy_pass ${gatehouse};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Original-URI "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
    }
    location / {
      auth_request /oauth2/auth;
      error_page 401 = @sign_in;
      auth_request_set $auth_user $upstream_http_x_auth_request_preferred_username;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
      proxy_set_header X-Auth-Request-Preferred-Username $auth_user;
      proxy_pass ${app};
    }
    location @sign_in {
      rewrite ^ /oauth2/sign_in? break;
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }
  }`
}

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
    const dir = mkdtempSync(join(tmpdir(), 'gh-nginx-shared-'))
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d))
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    server_name gate.apps.localhost;
    location / {
      proxy_pass ${gateway.url};
      proxy_set_header Host $host:$server_port;
    }
  }
${server('grafana.apps.localhost', port, gateway.url, grafana.url)}
${server('wiki.apps.localhost', port, gateway.url, wiki.url)}
}
`,
    )
    nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    nginx.stderr!.on('data', (d) => (stderr += d))
    for (let i = 0; i < 200; i++) {
      const up = await browserFetch(at('grafana', '/')).then(
        () => true,
        () => false,
      )
      if (up) break
      if (nginx.exitCode !== null) throw new Error(`nginx exited: ${stderr}`)
      await new Promise((r) => setTimeout(r, 25))
    }
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
