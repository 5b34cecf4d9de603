/**
 * What the upstream can trust (Gatehouse 10, items 3 and 4), end to end with a real oidc-provider, the
 * whole Node gateway and an upstream that reads what it gets: claims sent as headers
 * (identity.headers_from_claims) for a browser session and for a gth_ API token, and a client's own copy
 * of such a header never reaching the upstream, in any spelling, over a raw socket to the Node proxy and
 * through the fetch and edge adapters.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { CoreBundle } from '../../src/adapters/edge/bundle.ts'
import { createEdgeHandler } from '../../src/adapters/edge/handler.ts'
import { createFetchHandler } from '../../src/adapters/fetch/handler.ts'
import { type Gateway, startGateway } from '../../src/app.ts'
import { prepareEdgeBundles } from '../../src/cli/build-edge.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { passedOn, viewerRequest } from '../adapters/edge/events.ts'
import type { CookieClient } from '../helpers/cookie-client.ts'
import { freePort, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signInAt, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SECRET = 'identity-assertion-test-secret-0123456789abcdef'

interface Received {
  url: string
  /** Lower-case name → values, every copy the upstream got, in the spelling it got it. */
  headers: Map<string, string[]>
}

/** An upstream that keeps every header it received, duplicates and spellings included. */
async function startUpstream() {
  const received: Received[] = []
  const server = createServer((req: IncomingMessage, res) => {
    const headers = new Map<string, string[]>()
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase()
      headers.set(name, [...(headers.get(name) ?? []), req.rawHeaders[i + 1]!])
    }
    received.push({ url: req.url ?? '', headers })
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    received,
    last: () => received.at(-1)!,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** One request written byte for byte; resolves with the status line once the answer is complete. */
async function raw(port: number, lines: string[]): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(`${lines.join('\r\n')}\r\n\r\n`)
  let text = ''
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    text += chunk
  })
  const timer = setTimeout(() => socket.destroy(), 5000)
  await once(socket, 'close')
  clearTimeout(timer)
  return text.split('\r\n', 1)[0]!
}

const LONG_NAME = `Alice ${'é'.repeat(700)}`

describe('claims as headers, and what a client cannot add to them', () => {
  let idp: TestIdP
  let upstream: Awaited<ReturnType<typeof startUpstream>>
  let gateway: Gateway
  let port: number
  let base: string
  let browser: CookieClient
  let apiToken: string

  before(async () => {
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    // What a provider may send, which its own sign-up would never let in: CR/LF in a claim, and one
    // far past any header's size.
    idp.db
      .prepare('UPDATE idp_users SET name = ? WHERE username = ?')
      .run(`Alice\r\nX-Auth-Request-User: root\r\n${LONG_NAME}`, DEMO_USER.username)
    upstream = await startUpstream()
    const config = validateConfig(
      {
        public_url: base,
        upstream: upstream.url,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-assertion-')),
        provider: {
          issuer: idp.issuer,
          client_id: idp.clientId,
          client_secret: { env: 'CS' },
          scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
        },
        session: { secrets: [{ env: 'S' }] },
        lifetimes: {
          session: { ttl: '12h', max_ttl: '7d' },
          refresh: { ttl: '7d', max_ttl: '7d' },
          api_token: { ttl: '30d', max_ttl: '90d' },
          derived_token: { ttl: '1h', max_ttl: '1d' },
          signing_key: { ttl: '30d', max_ttl: '180d' },
        },
        routes: [{ path: '/public/*', allow: 'anonymous' }],
        identity: {
          headers_from_claims: {
            'X-User-Name': 'name',
            'X-User-Groups': 'groups',
            'X-Email-Verified': 'email_verified',
            'X-User-Department': 'department',
            'X-Token-Iat': 'iat',
            'X-Token-Id': 'jti',
          },
        },
        shedding: false,
        log: { level: 'error' },
      },
      'test',
    )
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      listen: { host: '127.0.0.1', port },
      env: { S: SECRET, CS: idp.clientSecret },
    })
    ;({ browser } = await signInAt(`${base}/dashboard`, idp.issuer))
    apiToken = (await gateway.services.tokens.issue({ subject: 'ci-bot', scopes: ['deploy'] })).token
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  const one = (r: Received, name: string) => {
    const values = r.headers.get(name)
    assert.ok(values === undefined || values.length === 1, `${name}: one copy at most`)
    return values?.[0]
  }

  test('a browser session: a string, an array, a boolean and a number; CR/LF removed, a long value cut', async () => {
    const r = await browser.request(`${base}/dashboard`)
    assert.equal(r.status, 200)
    const got = upstream.last()
    assert.equal(one(got, 'x-auth-request-preferred-username'), DEMO_USER.username)
    assert.equal(one(got, 'x-user-groups'), DEMO_USER.groups.join(','))
    assert.equal(one(got, 'x-email-verified'), 'true')
    assert.match(one(got, 'x-token-iat')!, /^\d{10}$/, "the ID token's iat, a number")
    assert.equal(one(got, 'x-user-department'), undefined, 'a claim the provider did not send')
    assert.equal(one(got, 'x-token-id'), undefined)
    const name = one(got, 'x-user-name')!
    assert.equal(name.length, 1024, 'cut at 1024 bytes')
    const text = new TextDecoder().decode(Uint8Array.from(name, (c) => c.charCodeAt(0)))
    assert.ok(text.startsWith('AliceX-Auth-Request-User: rootAlice éé'), text.slice(0, 60))
    assert.ok(!text.includes('\uFFFD'), 'never cut inside a character')
    assert.notEqual(one(got, 'x-auth-request-user'), 'root', 'no header smuggled in by the claim')
  })

  test('a gth_ API token: the claims of the verified token', async () => {
    const r = await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${apiToken}` } })
    assert.equal(r.status, 200)
    const got = upstream.last()
    assert.equal(one(got, 'x-auth-request-user'), 'ci-bot')
    assert.match(one(got, 'x-token-id')!, /^[A-Za-z0-9_-]{22}$/)
    assert.match(one(got, 'x-token-iat')!, /^\d{10}$/)
    assert.equal(one(got, 'x-user-name'), undefined)
    assert.equal(one(got, 'x-user-department'), undefined)
  })

  const SPOOFED = [
    'X-User-Department: spoofed-dash',
    'X_User_Department: spoofed-underscore',
    'x-user_department: spoofed-mixed',
    'X-USER-NAME: spoofed-name',
    'X-Token-Iat: 1',
  ]

  for (const [what, credential] of [
    ['a browser session', 'cookie'],
    ['a gth_ API token', 'token'],
    ['no credential, on an anonymous route', 'none'],
  ] as const) {
    test(`over a raw socket, with ${what}: a client's claim headers never reach the upstream`, async () => {
      const auth =
        credential === 'cookie'
          ? [
              `Cookie: ${browser
                .cookies(`${base}/`)
                .map((c) => `${c.name}=${c.value}`)
                .join('; ')}`,
            ]
          : credential === 'token'
            ? [`Authorization: Bearer ${apiToken}`]
            : []
      const path = credential === 'none' ? '/public/spoof' : `/spoof-${credential}`
      const before = upstream.received.length
      const status = await raw(port, [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        ...auth,
        ...SPOOFED,
        'Connection: close',
      ])
      assert.equal(status, 'HTTP/1.1 200 OK')
      assert.equal(upstream.received.length, before + 1)
      const got = upstream.last()
      assert.equal(got.url, path)
      for (const [name, values] of got.headers) {
        for (const v of values) assert.doesNotMatch(v, /spoofed/, `${name}: ${v}`)
        assert.ok(!name.includes('_'), `${name} reached the upstream`)
      }
      if (credential === 'cookie') assert.equal(one(got, 'x-email-verified'), 'true')
      if (credential === 'none') assert.equal(got.headers.get('x-user-department'), undefined)
      assert.notEqual(one(got, 'x-token-iat'), '1')
    })
  }
})

describe('claim headers a client sends, in the fetch and edge adapters', () => {
  const claims = { headers_from_claims: { 'X-User-Department': 'department' } }
  const spoofed = {
    'X-User-Department': 'spoofed-dash',
    X_User_Department: 'spoofed-underscore',
    'X-Custom': 'kept',
  }

  test('the fetch adapter drops them on an anonymous route', async () => {
    const upstream = await startRecordingUpstream()
    try {
      const handle = await createFetchHandler(
        validateConfig({
          public_url: 'http://localhost:8787',
          upstream: upstream.url,
          provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'C' } },
          session: { secrets: [{ env: 'S' }] },
          lifetimes: DEV_LIFETIMES,
          routes: [{ path: '*', allow: 'anonymous' }],
          identity: claims,
        }),
        { env: { C: 'unused', S: SECRET } },
      )
      const response = await handle(new Request('http://localhost:8787/page', { headers: spoofed }))
      assert.equal(response.status, 200)
      const got = upstream.requests.at(-1)!.headers
      assert.equal(got['x-user-department'], undefined)
      assert.equal(got['x_user_department'], undefined)
      assert.equal(got['x-custom'], 'kept')
    } finally {
      await upstream.close()
    }
  })

  test('the edge adapter (check-auth) drops them on an anonymous route', async () => {
    const origin = 'https://app.example.com'
    const idp = await startTestIdP({ redirectUris: [`${origin}/oauth2/callback`] })
    const dir = mkdtempSync(join(tmpdir(), 'gh-assertion-edge-'))
    try {
      const config = validateConfig({
        public_url: origin,
        upstream: 'https://origin.example.com',
        data_dir: dir,
        provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'C' } },
        session: { secrets: [{ env: 'S' }] },
        lifetimes: DEV_LIFETIMES,
        routes: [{ path: '/public/*', allow: 'anonymous' }],
        identity: claims,
      })
      const prepared = await prepareEdgeBundles(config, {
        baseDir: dir,
        env: { C: idp.clientSecret, S: SECRET },
      })
      const checkAuth = createEdgeHandler(prepared.bundles['check-auth'] as CoreBundle, { log: silentLogger })
      const headers = Object.fromEntries(Object.entries(spoofed).map(([k, v]) => [k.toLowerCase(), v]))
      const request = passedOn(await checkAuth(viewerRequest('/public/page', { headers })))
      assert.deepEqual(Object.keys(request.headers).sort(), ['host', 'user-agent', 'x-custom'])
    } finally {
      await idp.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
