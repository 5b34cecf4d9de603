/**
 * Forward-auth behind a real Caddy (Debian's package, `forward_auth`): Caddy asks Gatehouse's
 * /oauth2/auth?redirect=1 about every request and copies the identity headers to the app; a browser
 * without a session gets Gatehouse's sign-in redirect passed through. Skips loudly when Caddy is
 * missing locally; under CI=true it must run.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
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
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const CADDY = process.env['CADDY_PATH'] ?? '/usr/bin/caddy'
const missing = !existsSync(CADDY)
if (missing && process.env['CI'] === 'true')
  throw new Error(`Caddy is required under CI but ${CADDY} is missing`)
if (missing)
  console.warn(
    `\n*** SKIPPING the Caddy forward-auth test: no caddy at ${CADDY} (apt-get install -y caddy) ***\n`,
  )

/** The documented Caddyfile (docs/deploy-forward-auth.md), with test addresses filled in. */
function caddyfile(port: number, gatehouse: string, app: string): string {
  return `{
	admin off
	auto_https off
}

http://127.0.0.1:${port} {
	# Gatehouse's own endpoints: sign-in, callback, sign-out.
	handle /oauth2/* {
		reverse_proxy ${gatehouse}
	}
	# route keeps the order as written (Caddy would otherwise run forward_auth before request_header).
	route {
		# Client-sent identity headers never reach the app, whatever the check answers.
		request_header -X-Auth-Request-*
		forward_auth ${gatehouse} {
			uri /oauth2/auth?redirect=1
			copy_headers X-Auth-Request-User X-Auth-Request-Email X-Auth-Request-Groups X-Auth-Request-Preferred-Username X-Auth-Request-Scopes
		}
		reverse_proxy ${app}
	}
}
`
}

describe('forward-auth behind Caddy', { skip: missing ? `no caddy at ${CADDY}` : false }, () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let caddy: ChildProcess
  let base: string

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    upstream = await startRecordingUpstream()
    gateway = await startGateway(
      validateConfig({
        public_url: base,
        upstream: upstream.url,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-caddy-')),
        listen: { host: '127.0.0.1', port: 0 },
        provider: {
          issuer: idp.issuer,
          client_id: idp.clientId,
          client_secret: { env: 'CS' },
          scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
        },
        session: { secrets: [{ env: 'SS' }] },
        lifetimes: DEV_LIFETIMES,
        routes: [{ path: '/public/*', allow: 'anonymous' }],
      }),
      {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        env: { CS: idp.clientSecret, SS: 'caddy-forward-auth-session-secret-0123456' },
      },
    )
    const dir = mkdtempSync(join(tmpdir(), 'gh-caddyfile-'))
    writeFileSync(join(dir, 'Caddyfile'), caddyfile(port, gateway.url, upstream.url))
    caddy = spawn(CADDY, ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], {
      env: { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    caddy.stderr!.on('data', (d) => (stderr += d))
    for (let i = 0; i < 400; i++) {
      const up = await fetch(`${base}/public/ping`).then(
        (r) => r.status === 200,
        () => false,
      )
      if (up) break
      if (caddy.exitCode !== null) throw new Error(`caddy exited: ${stderr.slice(-2000)}`)
      await new Promise((r) => setTimeout(r, 25))
    }
  })

  after(async () => {
    caddy?.kill('SIGTERM')
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  test('a browser is redirected to sign in, comes back, and the app gets the copied identity headers', async () => {
    const browser = createCookieClient({ fetch: browserFetch })
    const reached = upstream.requests.length
    const first = await browser.request(`${base}/board?x=1&y=2`, { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    assert.ok(first.headers.get('location')!.startsWith(idp.issuer), 'straight to the provider')
    assert.equal(upstream.requests.length, reached, 'the app was not reached')
    const callback = await signIn(
      browser,
      first.headers.get('location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
    assert.equal(done.response.status, 200)
    assert.equal(done.url, `${base}/board?x=1&y=2`)
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-email'], DEMO_USER.email)
    await browser.request(`${base}/spoof`, { headers: { 'x-auth-request-groups': 'root' } })
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-groups'], 'admins,staff')
  })

  test('an API call without a session gets 401 from Gatehouse, passed through; spoofed headers never pass', async () => {
    const count = upstream.requests.length
    const r = await fetch(`${base}/api/x`, { headers: { accept: 'application/json' } })
    assert.equal(r.status, 401)
    assert.equal((await r.json()).error, 'missing_credentials')
    assert.equal(upstream.requests.length, count)
    const anon = await fetch(`${base}/public/a`, { headers: { 'x-auth-request-user': 'root' } })
    assert.equal(anon.status, 200)
    // Empty, never the client's value (nor, with Caddy 2.6, an unexpanded placeholder).
    assert.ok(
      [undefined, ''].includes(
        upstream.requests.at(-1)!.headers['x-auth-request-user'] as string | undefined,
      ),
    )
  })

  test('a client-sent X-Original-URI cannot make the check judge another path', async () => {
    const count = upstream.requests.length
    const r = await fetch(`${base}/api/x`, {
      headers: { accept: 'application/json', 'x-original-uri': '/public/a' },
    })
    assert.equal(r.status, 400, "Caddy passes the check's answer on")
    assert.equal(((await r.json()) as { error: string }).error, 'conflicting_forwarded_uri')
    assert.equal(upstream.requests.length, count, 'the app was not reached')
  })
})
