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
import { createRemoteJWKSet, decodeJwt, generateKeyPair, type JWTPayload, jwtVerify, SignJWT } from 'jose'
import type { CoreBundle } from '../../src/adapters/edge/bundle.ts'
import { createEdgeHandler } from '../../src/adapters/edge/handler.ts'
import { createFetchHandler } from '../../src/adapters/fetch/handler.ts'
import { type Gateway, startGateway } from '../../src/app.ts'
import { prepareEdgeBundles } from '../../src/cli/build-edge.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createAssertionSigner } from '../../src/core/assertion.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
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
  /** X-Gatehouse-Assertion as the upstream checked it (docs/identity-assertion.md), when there was one. */
  assertion?: { ok: true; claims: JWTPayload } | { ok: false; code: string }
}

/**
 * An upstream that keeps every header it received, duplicates and spellings included, and verifies the
 * identity assertion the way docs/identity-assertion.md says: against the gateway's JWKS, with issuer,
 * audience and typ.
 */
async function startUpstream(verify?: (token: string) => Promise<JWTPayload>) {
  const received: Received[] = []
  const server = createServer(async (req: IncomingMessage, res) => {
    const headers = new Map<string, string[]>()
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase()
      headers.set(name, [...(headers.get(name) ?? []), req.rawHeaders[i + 1]!])
    }
    const r: Received = { url: req.url ?? '', headers }
    const token = headers.get('x-gatehouse-assertion')
    if (verify !== undefined && token !== undefined) {
      r.assertion = await verify(token.join(',')).then(
        (claims) => ({ ok: true as const, claims }),
        (err: { code?: string }) => ({ ok: false as const, code: err.code ?? 'ERR_UNKNOWN' }),
      )
    }
    received.push(r)
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
  // The IdP signs on the real clock; the gateway's starts there and moves only when told.
  const clock = createFrozenClock(Date.now())

  before(async () => {
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    // What a provider may send, which its own sign-up would never let in: CR/LF in a claim, and one
    // far past any header's size.
    idp.db
      .prepare('UPDATE idp_users SET name = ? WHERE username = ?')
      .run(`Alice\r\nX-Auth-Request-User: root\r\n${LONG_NAME}`, DEMO_USER.username)
    const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))
    upstream = await startUpstream(
      async (token) =>
        (
          await jwtVerify(token, jwks, {
            issuer: base,
            audience: base,
            typ: 'gatehouse-assertion+jwt',
            algorithms: ['EdDSA'],
            currentDate: new Date(clock.now()),
          })
        ).payload,
    )
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
          assertion: { enabled: true },
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
      clock,
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
    'X-Gatehouse-Assertion: spoofed.forged.assertion',
    'X_Gatehouse_Assertion: spoofed-underscore',
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
      if (credential === 'none') assert.equal(got.headers.get('x-gatehouse-assertion'), undefined)
      else assert.equal(got.assertion?.ok, true, "one assertion, the gateway's own, and it verifies")
    })
  }

  const assertionOf = (r: Received) => {
    assert.ok(r.assertion?.ok, `the assertion verifies: ${JSON.stringify(r.assertion)}`)
    return { token: one(r, 'x-gatehouse-assertion')!, claims: r.assertion.claims }
  }

  test("a browser session's assertion verifies against the gateway's JWKS and says who it is", async () => {
    assert.equal((await browser.request(`${base}/page`)).status, 200)
    const { token, claims } = assertionOf(upstream.last())
    assert.deepEqual(
      { ...claims, iat: undefined, exp: undefined },
      {
        iss: base,
        aud: base,
        sub: idp.users.find(DEMO_USER.username)!.sub,
        email: DEMO_USER.email,
        groups: [...DEMO_USER.groups],
        preferred_username: DEMO_USER.username,
        token_use: 'gatehouse-assertion',
        iat: undefined,
        exp: undefined,
      },
    )
    assert.equal(claims.iat, Math.floor(clock.now() / 1000))
    assert.equal(claims.exp! - claims.iat!, 60)
    assert.equal(decodeJwt(token).jti, undefined)
  })

  test('the same assertion is reused while more than half its lifetime is left, then signed anew', async () => {
    const seen = async () => {
      assert.equal((await browser.request(`${base}/page`)).status, 200)
      return assertionOf(upstream.last())
    }
    const first = await seen()
    assert.equal((await seen()).token, first.token, 'the next request: the same assertion')
    clock.advance(29_000)
    assert.equal((await seen()).token, first.token, '29 s later: still the same')
    clock.advance(2_000)
    const renewed = await seen()
    assert.notEqual(renewed.token, first.token, 'past half its lifetime: a new one')
    assert.equal(renewed.claims.iat, Math.floor(clock.now() / 1000))
    assert.equal((await seen()).token, renewed.token)
    // The old one, sent by a client once it expired: dropped, the upstream gets a fresh one.
    clock.advance(61_000)
    const status = await raw(port, [
      'GET /replayed HTTP/1.1',
      `Host: 127.0.0.1:${port}`,
      `Cookie: ${browser
        .cookies(`${base}/`)
        .map((c) => `${c.name}=${c.value}`)
        .join('; ')}`,
      `X-Gatehouse-Assertion: ${first.token}`,
      'Connection: close',
    ])
    assert.equal(status, 'HTTP/1.1 200 OK')
    const replayed = upstream.last()
    assert.equal(replayed.url, '/replayed')
    assert.notEqual(assertionOf(replayed).token, first.token)
  })

  test('a gth_ API token gets an assertion for its subject', async () => {
    const r = await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${apiToken}` } })
    assert.equal(r.status, 200)
    const { claims } = assertionOf(upstream.last())
    assert.equal(claims.sub, 'ci-bot')
    assert.deepEqual(claims.groups, [])
  })

  test('forward-auth answers the assertion too (nginx: auth_request_set), empty when anonymous', async () => {
    const cookie = browser
      .cookies(`${base}/`)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    const ok = await fetch(`${base}/oauth2/auth`, { headers: { cookie, 'x-forwarded-uri': '/page' } })
    assert.equal(ok.status, 202)
    const token = ok.headers.get('x-gatehouse-assertion')!
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`)), {
      issuer: base,
      audience: base,
      typ: 'gatehouse-assertion+jwt',
      currentDate: new Date(clock.now()),
    })
    assert.equal(payload.sub, idp.users.find(DEMO_USER.username)!.sub)
    const anonymous = await fetch(`${base}/oauth2/auth`, { headers: { 'x-forwarded-uri': '/public/x' } })
    assert.equal(anonymous.status, 202)
    assert.equal(anonymous.headers.get('x-gatehouse-assertion'), '')
  })

  test('an assertion is never accepted as an API token, nor as a provider token', async () => {
    assert.equal((await browser.request(`${base}/page`)).status, 200)
    const { token } = assertionOf(upstream.last())
    for (const presented of [`gth_${token}`, token]) {
      const r = await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${presented}` } })
      assert.equal(r.status, 401)
      assert.match(r.headers.get('www-authenticate')!, /error="invalid_token"/)
    }
    // Even signed by the same key with every claim an API token has, a JWT typed otherwise is refused.
    const key = gateway.services.keyRing.signingKey()
    const now = Math.floor(clock.now() / 1000)
    const lookalike = await new SignJWT({ scope: '', jti: 'abcdefghijklmnopqrstuv' })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'gatehouse-assertion+jwt' })
      .setIssuer(base)
      .setAudience(base)
      .setSubject('ci-bot')
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(key.key)
    const verdict = await gateway.services.tokens.verify(`gth_${lookalike}`)
    assert.equal(verdict.ok, false)
    assert.match(!verdict.ok ? verdict.reason : '', /typ/)
  })

  test('an API token never passes the verification docs/identity-assertion.md gives', async () => {
    const jwt = apiToken.slice('gth_'.length)
    const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))
    const at = { issuer: base, audience: base, currentDate: new Date(clock.now()) }
    // Same keys, same issuer and (by default) audience: the typ check is what tells them apart.
    await jwtVerify(jwt, jwks, at)
    await assert.rejects(jwtVerify(jwt, jwks, { ...at, typ: 'gatehouse-assertion+jwt' }), {
      code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
    })
    assert.notEqual(decodeJwt(jwt)['token_use'], 'gatehouse-assertion')
  })
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

describe('the assertion signer', () => {
  test('one signature for concurrent requests of one identity; a hit is the string itself; per audience', async () => {
    const clock = createFrozenClock(Date.UTC(2026, 0, 1))
    const { privateKey, publicKey } = await generateKeyPair('EdDSA')
    let signatures = 0
    const assertionFor = createAssertionSigner({
      issuer: 'https://app.example.com',
      ttlSeconds: 60,
      clock,
      signingKey: () => {
        signatures++
        return { kid: 'k1', alg: 'EdDSA', key: privateKey }
      },
    })
    const identity = { sub: 'u1', user: 'u1', groups: ['g'] }
    const first = assertionFor(identity, 'https://a.example')
    assert.ok(first instanceof Promise)
    assert.equal(assertionFor(identity, 'https://a.example'), first, 'the signature in flight is shared')
    const token = await first
    assert.equal(signatures, 1)
    assert.equal(assertionFor(identity, 'https://a.example'), token)
    const other = await assertionFor(identity, 'https://b.example')
    const { payload, protectedHeader } = await jwtVerify(other, publicKey, {
      audience: 'https://b.example',
      issuer: 'https://app.example.com',
      typ: 'gatehouse-assertion+jwt',
      currentDate: new Date(clock.now()),
    })
    assert.equal(payload.sub, 'u1')
    assert.equal(protectedHeader.kid, 'k1')
    await assertionFor({ ...identity }, 'https://a.example')
    assert.equal(signatures, 3, 'another identity object is signed for on its own')
  })

  test('the fetch handler, which holds no signing keys, refuses identity.assertion', async () => {
    const config = validateConfig({
      public_url: 'http://localhost:8787',
      upstream: 'http://127.0.0.1:9',
      provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'C' } },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
      identity: { assertion: { enabled: true } },
    })
    await assert.rejects(createFetchHandler(config, { env: { C: 'unused', S: SECRET } }), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'ERR_CONFIG')
      assert.match(err.message, /identity\.assertion\.enabled: needs Gatehouse's signing keys/)
      return true
    })
  })

  test('identity.assertion in the config: off by default, 60 s, ttl between 10 s and 1 h', () => {
    const base = {
      public_url: 'https://app.example.com',
      upstream: 'http://127.0.0.1:3000',
      provider: { issuer: 'https://idp.example.com', client_id: 'c' },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
    }
    assert.deepEqual(validateConfig(base).identity.assertion, { enabled: false, ttl: 60 })
    assert.deepEqual(
      validateConfig({ ...base, identity: { assertion: { enabled: true, ttl: '2m', audience: 'api' } } })
        .identity.assertion,
      { enabled: true, ttl: 120, audience: 'api' },
    )
    assert.throws(
      () => validateConfig({ ...base, identity: { assertion: { enabled: true, ttl: '2h' } } }),
      /identity\.assertion\.ttl: expected a duration from 10s to 1h/,
    )
  })
})
