/**
 * Forward-auth behind a real nginx (Debian's package, auth_request module): nginx asks Gatehouse's
 * /oauth2/auth about every request, sends browsers to sign in on a 401, and copies the identity
 * headers to the app. Skips loudly when nginx is missing locally; under CI=true it must run.
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
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { NGINX, runNginx } from '../../helpers/nginx.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const missing = !existsSync(NGINX)
if (missing && process.env['CI'] === 'true')
  throw new Error(`nginx is required under CI but ${NGINX} is missing`)
if (missing)
  console.warn(
    `\n*** SKIPPING the nginx forward-auth test: no nginx at ${NGINX} (apt-get install -y nginx) ***\n`,
  )

/**
 * The documented nginx config (docs/deploy-forward-auth.md), with test ports and paths filled in; on
 * `originalPort`, the shape of nginx's own auth_request examples, which pass the URI as X-Original-URI.
 */
function nginxConf(dir: string, port: number, originalPort: number, gatehouse: string, app: string): string {
  return `worker_processes 1;
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

    # Gatehouse's own endpoints: sign-in, callback, sign-out.
    location /oauth2/ {
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }

    # The check itself: internal only, without the request body.
    location = /oauth2/auth {
      internal;
      proxy_pass ${gatehouse};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Original-URI "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }

    location / {
      auth_request /oauth2/auth;
      error_page 401 = @sign_in;

      auth_request_set $auth_user $upstream_http_x_auth_request_user;
      auth_request_set $auth_email $upstream_http_x_auth_request_email;
      auth_request_set $auth_groups $upstream_http_x_auth_request_groups;
      auth_request_set $auth_username $upstream_http_x_auth_request_preferred_username;
      auth_request_set $auth_scopes $upstream_http_x_auth_request_scopes;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;

      # Always set (an empty value removes the header): a client can never send its own. nginx cannot drop
      # headers by prefix, so the app must trust only these five (a client's own X-Auth-Request-Access-Token
      # or X-Forwarded-User, say, would reach it).
      proxy_set_header X-Auth-Request-User $auth_user;
      proxy_set_header X-Auth-Request-Email $auth_email;
      proxy_set_header X-Auth-Request-Groups $auth_groups;
      proxy_set_header X-Auth-Request-Preferred-Username $auth_username;
      proxy_set_header X-Auth-Request-Scopes $auth_scopes;
      proxy_pass ${app};
    }

    # A browser without a session: Gatehouse starts the sign-in and redirects to the provider; the
    # original URI travels as a header (nginx cannot URL-encode it into a query parameter).
    location @sign_in {
      rewrite ^ /oauth2/sign_in? break;
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }
  }

  server {
    listen 127.0.0.1:${originalPort};
    location = /oauth2/auth {
      internal;
      proxy_pass ${gatehouse};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
    location / {
      auth_request /oauth2/auth;
      proxy_pass ${app};
    }
  }
}
`
}

describe('forward-auth behind nginx', { skip: missing ? `no nginx at ${NGINX}` : false }, () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let nginx: ChildProcess
  let base: string
  let original: string

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    const originalPort = await freePort()
    original = `http://127.0.0.1:${originalPort}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-fa-')),
      listen: { host: '127.0.0.1', port: 0 },
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CS' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ env: 'SS' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [
        { path: '/public/*', allow: 'anonymous' },
        { path: '/finance/*', allow: { groups: ['finance'] } },
      ],
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      env: { CS: idp.clientSecret, SS: 'forward-auth-session-secret-0123456789ab' },
    })
    nginx = await runNginx(
      (dir) => nginxConf(dir, port, originalPort, gateway.url, upstream.url),
      `${base}/public/ping`,
    )
  })

  after(async () => {
    nginx?.kill('SIGTERM')
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  test('a browser is sent to sign in, comes back, and the app gets the identity headers nginx copied', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const reached = upstream.requests.length
    const toProvider = await browser.request(`${base}/reports?q=1&tab=2`, {
      headers: { accept: 'text/html' },
    })
    assert.equal(toProvider.status, 302)
    assert.ok(toProvider.headers.get('location')!.startsWith(idp.issuer), 'straight to the provider')
    assert.equal(upstream.requests.length, reached, 'the app was not reached')
    const callback = await signIn(
      browser,
      toProvider.headers.get('location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    assert.equal(callback.origin, base)
    const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
    assert.equal(done.response.status, 200)
    assert.equal(done.url, `${base}/reports?q=1&tab=2`, 'back to the original URI, query and all')
    const seen = upstream.requests.at(-1)!
    assert.equal(seen.headers['x-auth-request-email'], DEMO_USER.email)
    assert.equal(seen.headers['x-auth-request-groups'], 'admins,staff')
    assert.equal(seen.headers['x-auth-request-user'], idp.users.find(DEMO_USER.username)!.sub)

    // A client's own identity header is overwritten by nginx with what Gatehouse said.
    await browser.request(`${base}/spoof`, {
      headers: { 'x-auth-request-user': 'root', 'x-auth-request-groups': 'finance' },
    })
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-groups'], 'admins,staff')

    // Policy by the original URI: 403, and the app is not reached.
    const count = upstream.requests.length
    const forbidden = await browser.request(`${base}/finance/q3`)
    assert.equal(forbidden.status, 403)
    assert.equal(upstream.requests.length, count)
  })

  test('anonymous routes pass without identity; spoofed headers are emptied', async () => {
    const r = await fetch(`${base}/public/logo`, { headers: { 'x-auth-request-user': 'root' } })
    assert.equal(r.status, 200)
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-user'], undefined)
  })

  test('the check endpoint itself is internal to nginx', async () => {
    const r = await fetch(`${base}/oauth2/auth`)
    assert.equal(r.status, 404)
  })

  test('without X-Forwarded-Uri or X-Original-URI the check answers 400 missing_forwarded_uri, never a verdict on /', async () => {
    const r = await fetch(`${gateway.url}/oauth2/auth`, { headers: { accept: 'application/json' } })
    assert.equal(r.status, 400)
    assert.equal(((await r.json()) as { error: string }).error, 'missing_forwarded_uri')
  })

  test('X-Original-URI (as in the nginx examples) is judged like X-Forwarded-Uri; a client cannot add the other', async () => {
    const count = upstream.requests.length
    const anonymous = await fetch(`${original}/public/orig`)
    assert.equal(anonymous.status, 200, 'judged on /public/orig, an anonymous route')
    assert.equal(upstream.requests.at(-1)!.url, '/public/orig')
    const refused = await fetch(`${original}/reports`)
    assert.equal(refused.status, 401, 'judged on /reports')
    // auth_request hands the client's headers to the check: its own X-Forwarded-Uri must not win.
    const smuggled = await fetch(`${original}/finance/q3`, { headers: { 'x-forwarded-uri': '/public/x' } })
    assert.equal(smuggled.status, 500, 'nginx answers 500 when the check says 400')
    // And through the documented config, a client's X-Original-URI is cleared by nginx.
    const cleared = await fetch(`${base}/public/ok`, { headers: { 'x-original-uri': '/finance/q3' } })
    assert.equal(cleared.status, 200)
    assert.equal(upstream.requests.length, count + 2, 'only the two anonymous requests reached the app')
  })
})
