/**
 * Identity and forwarding headers spelled with underscores (Gatehouse 8, item 3). CGI, WSGI and Rack
 * read `X_Auth_Request_User` as `HTTP_X_AUTH_REQUEST_USER`, the same as `X-Auth-Request-User`, so every
 * adapter drops a client's copy in either spelling: the rule in header-rules.ts, and the fetch and edge
 * adapters using it. (The Node proxy is tested over a raw socket in node-proxy/raw-socket-attacks.)
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import type { CoreBundle } from '../../src/adapters/edge/bundle.ts'
import { createEdgeHandler } from '../../src/adapters/edge/handler.ts'
import { createFetchHandler } from '../../src/adapters/fetch/handler.ts'
import { isGatewayOwned, isHopByHop, upstreamHeaderName } from '../../src/adapters/header-rules.ts'
import { prepareEdgeBundles } from '../../src/cli/build-edge.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/validate.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'
import { generated, passedOn, viewerRequest } from './edge/events.ts'

const SPOOFED: Record<string, string> = {
  X_Auth_Request_User: 'root',
  'x-auth_request-email': 'root@evil.example',
  'X-Auth-Request_Groups': 'admins',
  X_AUTH_REQUEST_ACCESS_TOKEN: 'forged',
  X_Forwarded_For: '203.0.113.66',
  x_forwarded_host: 'evil.example',
  X_Real_IP: '203.0.113.66',
  X_Gatehouse_Degraded: 'no',
  'X-Custom_Header': 'kept',
}
const cgi = (name: string) => name.toUpperCase().replace(/-/g, '_')
const GATEWAY_SET = new Set(['X_FORWARDED_FOR', 'X_FORWARDED_HOST', 'X_FORWARDED_PROTO', 'X_REAL_IP'])

/** The names the upstream got, as CGI reads them, that are the client's copies of protected fields. */
function clientCopies(names: string[]): string[] {
  return names.filter((n) => n.includes('_') && cgi(n) !== 'X_CUSTOM_HEADER')
}

describe('the header rule', () => {
  test('gateway-owned and hop-by-hop names match in any case, with _ for -', () => {
    for (const name of [
      'X_Auth_Request_User',
      'x-auth_request-user',
      'X-AUTH-REQUEST-EMAIL',
      'x_forwarded_for',
      'X_Real_IP',
      'x_gatehouse_degraded',
      'FORWARDED',
      'Proxy',
      'PROXY',
    ])
      assert.ok(isGatewayOwned(name), name)
    for (const name of [
      'x_custom',
      'x-authrequest-user',
      'x_auth_requestuser',
      'xforwarded-for',
      'forwarded_x',
    ])
      assert.ok(!isGatewayOwned(name), name)
    for (const name of ['Transfer_Encoding', 'keep_alive', 'Proxy_Authorization', 'PROXY_CONNECTION'])
      assert.ok(isHopByHop(name), name)
    assert.equal(upstreamHeaderName('x-plain'), 'x-plain')
  })

  test('property: every spelling of a protected name that CGI maps to the same variable is protected', () => {
    const base = fc.constantFrom(
      'x-auth-request-user',
      'x-auth-request-email',
      'x-auth-request-groups',
      'x-auth-request-access-token',
      'x-forwarded-for',
      'x-forwarded-host',
      'x-forwarded-proto',
      'x-real-ip',
      'x-gatehouse-degraded',
    )
    fc.assert(
      fc.property(base, fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), (name, flips) => {
        const spelled = [...name]
          .map((c, i) => (c === '-' && flips[i] ? '_' : flips[(i + 7) % 40] ? c.toUpperCase() : c))
          .join('')
        assert.ok(isGatewayOwned(spelled), spelled)
      }),
    )
  })
})

describe('the fetch adapter', () => {
  let upstream: RecordingUpstream
  let handle: (request: Request) => Promise<Response>
  before(async () => {
    upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: 'http://localhost:8787',
      upstream: upstream.url,
      provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'C' } },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [{ path: '*', allow: 'anonymous' }],
    })
    handle = await createFetchHandler(config, {
      env: { C: 'unused', S: 'underscore-headers-session-secret-0123456789' },
      clientAddressHeader: 'cf-connecting-ip',
    })
  })
  after(() => upstream.close())

  test('X_Auth_Request_User and the like never reach the upstream', async () => {
    const response = await handle(
      new Request('http://localhost:8787/page', {
        headers: { ...SPOOFED, 'cf-connecting-ip': '192.0.2.7', Transfer_Encoding: 'chunked' },
      }),
    )
    assert.equal(response.status, 200)
    const got = upstream.requests.at(-1)!.headers
    assert.deepEqual(clientCopies(Object.keys(got)), [])
    assert.equal(got['x-custom_header'], 'kept')
    assert.equal(got['x-forwarded-for'], '192.0.2.7')
    assert.equal(got['x-forwarded-host'], 'localhost:8787')
    for (const name of Object.keys(got)) {
      const variable = cgi(name)
      if (variable.startsWith('X_AUTH_REQUEST_') || variable.startsWith('X_GATEHOUSE_'))
        assert.fail(`${name} reached the upstream on an anonymous request`)
      if (variable.startsWith('X_FORWARDED_') || variable === 'X_REAL_IP')
        assert.ok(GATEWAY_SET.has(variable))
    }
  })
})

describe('the edge adapter (check-auth)', () => {
  let idp: TestIdP
  let dir: string
  let checkAuth: ReturnType<typeof createEdgeHandler>
  before(async () => {
    const origin = 'https://app.example.com'
    idp = await startTestIdP({ redirectUris: [`${origin}/oauth2/callback`] })
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-underscore-'))
    const config = validateConfig({
      public_url: origin,
      upstream: 'https://origin.example.com',
      data_dir: dir,
      provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'C' } },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [{ path: '/public/*', allow: 'anonymous' }],
    })
    const prepared = await prepareEdgeBundles(config, {
      baseDir: dir,
      env: { C: idp.clientSecret, S: 'underscore-headers-session-secret-0123456789' },
    })
    checkAuth = createEdgeHandler(prepared.bundles['check-auth'] as CoreBundle, { log: silentLogger })
  })
  after(async () => {
    await idp?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('X_Auth_Request_User and the like are not passed on to the origin', async () => {
    const headers = Object.fromEntries(Object.entries(SPOOFED).map(([k, v]) => [k.toLowerCase(), v]))
    const request = passedOn(await checkAuth(viewerRequest('/public/page', { headers })))
    const names = Object.keys(request.headers)
    assert.deepEqual(clientCopies(names), [])
    assert.ok(names.includes('x-custom_header'), 'a header no rule protects is kept')
  })

  test('two Authorization entries are refused with 400 duplicate_authorization (Gatehouse 8, item 7)', async () => {
    const result = generated(
      await checkAuth(
        viewerRequest('/public/page', { headers: { authorization: ['Bearer a.b.c', 'Basic YTpi'] } }),
      ),
    )
    assert.equal(result.status, '400')
    assert.equal(JSON.parse(result.body ?? '{}').error, 'duplicate_authorization')
  })
})
