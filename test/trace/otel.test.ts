/**
 * OpenTelemetry traces end to end: a gateway with a real oidc-provider and a recording upstream exports
 * by OTLP/HTTP (JSON) to a receiver on loopback. Each gateway is closed before its spans are read: the
 * drain ends every request span, and the shutdown flushes the exporter (no sleeping).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { promisify } from 'node:util'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { providerCall } from '../../src/trace/otel.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SESSION_SECRET = 'trace-test-session-secret-0123456789abcdef'

interface OTLPValue {
  stringValue?: string
  intValue?: number | string
  boolValue?: boolean
}
interface OTLPSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Array<{ key: string; value: OTLPValue }>
  links?: Array<{ traceId: string; spanId: string }>
}

/** An OTLP/HTTP receiver: keeps every body posted to /v1/traces. */
async function startReceiver() {
  const bodies: string[] = []
  const server: Server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      body += chunk
    })
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') bodies.push(body)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    /** The resource attributes of every batch, as `key=value`. */
    resources(): string[] {
      const out = new Set<string>()
      for (const body of bodies) {
        const parsed = JSON.parse(body) as {
          resourceSpans: Array<{
            resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }
          }>
        }
        for (const rs of parsed.resourceSpans)
          for (const a of rs.resource.attributes) out.add(`${a.key}=${a.value.stringValue}`)
      }
      return [...out]
    },
    spans(): OTLPSpan[] {
      const all: OTLPSpan[] = []
      for (const body of bodies) {
        const parsed = JSON.parse(body) as {
          resourceSpans: Array<{ scopeSpans: Array<{ spans: OTLPSpan[] }> }>
        }
        for (const rs of parsed.resourceSpans) for (const ss of rs.scopeSpans) all.push(...ss.spans)
      }
      return all
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

function attr(span: OTLPSpan, key: string): string | number | boolean | undefined {
  const v = span.attributes.find((a) => a.key === key)?.value
  if (v === undefined) return undefined
  if (v.intValue !== undefined) return Number(v.intValue)
  return v.stringValue ?? v.boolValue
}

function one(spans: OTLPSpan[], predicate: (s: OTLPSpan) => boolean, what: string): OTLPSpan {
  const found = spans.filter(predicate)
  assert.equal(found.length, 1, `${what}: one span, found ${found.map((s) => s.name).join(', ') || 'none'}`)
  return found[0]!
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/

function parseTraceparent(value: unknown): { traceId: string; spanId: string; sampled: boolean } {
  const m = TRACEPARENT.exec(String(value))
  assert.ok(m, `a traceparent, got ${String(value)}`)
  return { traceId: m[1]!, spanId: m[2]!, sampled: m[3] === '1' }
}

describe('OpenTelemetry traces', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let receiver: Awaited<ReturnType<typeof startReceiver>>
  let port: number
  let base: string

  before(async () => {
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`], accessTokenTtlSeconds: 3600 })
    upstream = await startRecordingUpstream()
  })

  after(async () => {
    await upstream?.close()
    await idp?.close()
  })

  /**
   * A gateway with the `telemetry` section made from a fresh receiver's URL (`undefined`: none); the
   * provider calls it makes are recorded with their headers.
   */
  async function gatewayWith(
    telemetryFor: (receiverUrl: string) => Record<string, unknown> | undefined,
    upstreamUrl = upstream.url,
  ) {
    receiver = await startReceiver()
    const telemetry = telemetryFor(receiver.url)
    const providerRequests: Array<{ url: string; traceparent: string | null }> = []
    const config = validateConfig({
      public_url: base,
      upstream: upstreamUrl,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-trace-')),
      listen: { host: '127.0.0.1', port },
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'GH_CLIENT_SECRET' },
        scopes: ['openid', 'email', 'profile', 'groups'],
      },
      session: { secrets: [{ env: 'GH_SESSION_SECRET' }] },
      lifetimes: DEV_LIFETIMES,
      routes: [{ path: '/public/*', allow: 'anonymous' }],
      identity: { pass_access_token: true },
      shutdown: { drain: '1s' },
      ...(telemetry === undefined ? {} : { telemetry }),
    })
    const gateway: Gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_SECRET: SESSION_SECRET },
      fetch: (input, init) => {
        providerRequests.push({
          url: String(input),
          traceparent: new Headers(init?.headers).get('traceparent'),
        })
        return fetch(input, init)
      },
    })
    return { gateway, providerRequests }
  }

  test('a trusted client trace is continued through the check, the provider and the upstream; no secret in any span', async () => {
    const { gateway, providerRequests } = await gatewayWith((url) => ({
      traces: { otlp_endpoint: url, sample_ratio: 1, trust_incoming_trace: true },
    }))
    const secrets: string[] = []
    const signInTrace = '4bf92f3577b34da6a3ce929d0e0e4736'
    const signInParent = '00f067aa0ba902b7'
    const appTrace = '0af7651916cd43dd8448eb211c80319c'
    const appParent = 'b7ad6b7169203331'
    const quietTrace = '9af7651916cd43dd8448eb211c80319d'
    let appSpanAtUpstream = ''
    try {
      const browser = createCookieClient({ fetch: browserFetch })
      const first = await browser.request(`${base}/dashboard`, { headers: { accept: 'text/html' } })
      assert.equal(first.status, 302)
      const callback = await signIn(
        browser,
        first.headers.get('location')!,
        DEMO_USER.username,
        DEMO_USER.password,
        idp.issuer,
      )
      secrets.push(callback.searchParams.get('code')!, callback.searchParams.get('state')!)
      const signedIn = await browser.request(callback, {
        headers: { accept: 'text/html', traceparent: `00-${signInTrace}-${signInParent}-01` },
      })
      assert.equal(signedIn.status, 302, 'signed in, sent back to the page')
      for (const c of browser.cookies(base)) secrets.push(c.value)

      const before = upstream.requests.length
      const page = await browser.request(`${base}/dashboard?secret=query-value`, {
        headers: {
          accept: 'text/html',
          traceparent: `00-${appTrace}-${appParent}-01`,
          tracestate: 'vendor=client-state',
        },
      })
      assert.equal(page.status, 200)
      await page.text()
      assert.equal(upstream.requests.length, before + 1)
      const seen = upstream.requests.at(-1)!
      const accessToken = seen.headers['x-auth-request-access-token']
      assert.equal(typeof accessToken, 'string', 'the upstream got the access token (pass_access_token)')
      secrets.push(accessToken as string, 'query-value')
      const forwarded = parseTraceparent(seen.headers.traceparent)
      assert.equal(forwarded.traceId, appTrace, 'the upstream continues the client trace')
      assert.notEqual(forwarded.spanId, appParent, "the upstream's parent is Gatehouse's span")
      assert.equal(forwarded.sampled, true)
      appSpanAtUpstream = forwarded.spanId
      assert.equal(seen.headers.tracestate, 'vendor=client-state', 'tracestate carried along')

      // A trusted client's "not sampled" is followed too: passed on, nothing recorded.
      const unsampled = await browser.request(`${base}/dashboard`, {
        headers: { accept: 'text/html', traceparent: `00-${quietTrace}-${appParent}-00` },
      })
      assert.equal(unsampled.status, 200)
      await unsampled.text()
      const quiet = parseTraceparent(upstream.requests.at(-1)!.headers.traceparent)
      assert.equal(quiet.traceId, quietTrace)
      assert.equal(quiet.sampled, false)

      // The token exchange went to the provider with the callback's trace.
      const exchange = providerRequests.find((r) => r.url.includes('/token'))
      assert.ok(exchange, 'the provider was called for the token exchange')
      assert.equal(parseTraceparent(exchange.traceparent).traceId, signInTrace)
    } finally {
      await gateway.close()
      await receiver.close()
    }

    const spans = receiver.spans()
    // The resource names the service and Gatehouse's version (package.json).
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string
    }
    assert.ok(receiver.resources().includes('service.name=gatehouse'), receiver.resources().join(', '))
    assert.ok(
      receiver.resources().includes(`service.version=${pkg.version}`),
      receiver.resources().join(', '),
    )
    // The proxied request: request (server) → check, request → upstream (client), under the client's span.
    assert.deepEqual(
      spans.filter((s) => s.traceId === quietTrace),
      [],
    )
    // Discovery and keys, fetched at start outside any request, are traces of their own.
    for (const call of ['discovery', 'jwks']) {
      const span = spans.find((s) => s.name === `gatehouse.provider.${call}`)
      assert.ok(span, `a ${call} span`)
      assert.equal(span.parentSpanId ?? '', '')
      assert.match(String(attr(span, 'url.full')), /^http:\/\/127\.0\.0\.1:\d+\/_idp\//)
    }
    const inApp = spans.filter((s) => s.traceId === appTrace)
    const request = one(inApp, (s) => s.name === 'gatehouse.request', 'request span')
    assert.equal(request.parentSpanId, appParent)
    assert.equal(request.kind, 2, 'SERVER')
    assert.equal(attr(request, 'url.path'), '/dashboard', 'the path without its query')
    assert.equal(attr(request, 'http.response.status_code'), 200)
    assert.equal(attr(request, 'client.address'), undefined, 'no client address unless configured')
    const check = one(inApp, (s) => s.name === 'gatehouse.check', 'check span')
    assert.equal(check.parentSpanId, request.spanId)
    assert.equal(attr(check, 'gatehouse.decision'), 'allow')
    assert.equal(attr(check, 'gatehouse.code'), 'allow')
    assert.equal(attr(check, 'http.request.method'), 'GET')
    assert.equal(attr(check, 'gatehouse.route.rule'), -1, 'no rule matched: the default')
    const up = one(inApp, (s) => s.name === 'gatehouse.upstream', 'upstream span')
    assert.equal(up.parentSpanId, request.spanId)
    assert.equal(up.kind, 3, 'CLIENT')
    assert.equal(appSpanAtUpstream, up.spanId)
    assert.equal(attr(up, 'http.response.status_code'), 200)
    assert.equal(attr(up, 'server.address'), '127.0.0.1')

    // The callback: its check made the token exchange, whose span is the check's child.
    const inSignIn = spans.filter((s) => s.traceId === signInTrace)
    const callbackRequest = one(inSignIn, (s) => s.name === 'gatehouse.request', 'callback request span')
    assert.equal(callbackRequest.parentSpanId, signInParent)
    assert.equal(attr(callbackRequest, 'url.path'), '/oauth2/callback')
    const callbackCheck = one(inSignIn, (s) => s.name === 'gatehouse.check', 'callback check span')
    assert.equal(callbackCheck.parentSpanId, callbackRequest.spanId)
    assert.equal(attr(callbackCheck, 'gatehouse.decision'), 'respond')
    assert.equal(attr(callbackCheck, 'http.response.status_code'), 302)
    assert.equal(attr(callbackCheck, 'gatehouse.route.rule'), undefined, "Gatehouse's own endpoint")
    const tokenExchange = one(
      inSignIn,
      (s) => s.name === 'gatehouse.provider.token_exchange',
      'token exchange span',
    )
    assert.equal(tokenExchange.parentSpanId, callbackCheck.spanId)
    assert.equal(attr(tokenExchange, 'http.request.method'), 'POST')
    assert.equal(attr(tokenExchange, 'http.response.status_code'), 200)
    assert.equal(
      parseTraceparent(providerRequests.find((r) => r.url.includes('/token'))!.traceparent).spanId,
      tokenExchange.spanId,
      'the provider got the token exchange span as its parent',
    )

    // Nothing secret anywhere in what was exported: not in an attribute, not anywhere else.
    assert.ok(secrets.length >= 5)
    for (const secret of secrets) {
      assert.ok(secret.length >= 8, 'a real secret value')
      for (const body of receiver.bodies) assert.ok(!body.includes(secret), 'a secret reached the exporter')
    }
    for (const span of spans) {
      for (const a of span.attributes) {
        assert.doesNotMatch(a.key, /cookie|authorization|token\b/i, `attribute ${a.key} on ${span.name}`)
      }
    }
  })

  test('an untrusted client trace (the default) starts a new trace, linked to the client span', async () => {
    // No otlp_endpoint: the standard variable says where (the exporter reads it when it is built).
    const { gateway } = await (async () => {
      try {
        return await gatewayWith((url) => {
          process.env['OTEL_EXPORTER_OTLP_ENDPOINT'] = url
          return { traces: { sample_ratio: 1, record_client_address: true } }
        })
      } finally {
        delete process.env['OTEL_EXPORTER_OTLP_ENDPOINT']
      }
    })()
    const clientTrace = '11111111111111111111111111111111'
    const clientSpan = '2222222222222222'
    let forwarded: ReturnType<typeof parseTraceparent>
    try {
      const res = await fetch(`${base}/public/page`, {
        headers: { traceparent: `00-${clientTrace}-${clientSpan}-01`, tracestate: 'vendor=client' },
      })
      assert.equal(res.status, 200)
      await res.text()
      const seen = upstream.requests.at(-1)!
      forwarded = parseTraceparent(seen.headers.traceparent)
      assert.notEqual(forwarded.traceId, clientTrace, 'the client does not choose the trace id')
      assert.equal(seen.headers.tracestate, undefined, "the client's tracestate is not passed on")
    } finally {
      await gateway.close()
      await receiver.close()
    }
    const request = one(receiver.spans(), (s) => s.name === 'gatehouse.request', 'request span')
    assert.equal(request.traceId, forwarded.traceId)
    assert.equal(request.parentSpanId ?? '', '', 'a root span')
    assert.equal(attr(request, 'client.address'), '127.0.0.1', 'record_client_address')
    assert.deepEqual(
      request.links?.map((l) => [l.traceId, l.spanId]),
      [[clientTrace, clientSpan]],
    )
    const check = one(receiver.spans(), (s) => s.name === 'gatehouse.check', 'check span')
    assert.equal(attr(check, 'gatehouse.decision'), 'allow')
    assert.equal(attr(check, 'gatehouse.route.rule'), 0, 'the /public/* rule')
  })

  test("a client's sampled flag does not force sampling: sample_ratio 0 exports nothing", async () => {
    const { gateway } = await gatewayWith((url) => ({ traces: { otlp_endpoint: url, sample_ratio: 0 } }))
    const clientTrace = '33333333333333333333333333333333'
    try {
      const res = await fetch(`${base}/public/page`, {
        headers: { traceparent: `00-${clientTrace}-4444444444444444-01` },
      })
      assert.equal(res.status, 200)
      await res.text()
      const forwarded = parseTraceparent(upstream.requests.at(-1)!.headers.traceparent)
      assert.notEqual(forwarded.traceId, clientTrace)
      assert.equal(forwarded.sampled, false, 'the upstream is told this trace is not recorded')
    } finally {
      await gateway.close()
      await receiver.close()
    }
    assert.deepEqual(receiver.spans(), [])
  })

  test('an upstream that cannot be reached: the upstream span says why, the request span has the 502', async () => {
    const closed = await freePort()
    const { gateway } = await gatewayWith(
      (url) => ({ traces: { otlp_endpoint: url, sample_ratio: 1 } }),
      `http://127.0.0.1:${closed}/app`,
    )
    try {
      const res = await fetch(`${base}/public/page?x=1`)
      assert.equal(res.status, 502)
      await res.text()
    } finally {
      await gateway.close()
      await receiver.close()
    }
    const spans = receiver.spans()
    const up = one(spans, (s) => s.name === 'gatehouse.upstream', 'upstream span')
    assert.equal(attr(up, 'error.type'), 'ECONNREFUSED')
    assert.equal(attr(up, 'url.path'), '/app/public/page', "the upstream URL's path first, no query")
    assert.equal(attr(up, 'server.port'), closed)
    assert.equal(attr(up, 'http.response.status_code'), undefined)
    const request = one(spans, (s) => s.name === 'gatehouse.request', 'request span')
    assert.equal(attr(request, 'http.response.status_code'), 502)
    assert.equal(up.parentSpanId, request.spanId)
  })

  test('tracing off: the client trace reaches the upstream unchanged and nothing is exported', async () => {
    // The standard variables alone do not turn tracing on.
    const { gateway } = await gatewayWith((url) => {
      process.env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] = `${url}/v1/traces`
      return undefined
    })
    const traceparent = '00-55555555555555555555555555555555-6666666666666666-01'
    try {
      const res = await fetch(`${base}/public/page`, { headers: { traceparent, tracestate: 'vendor=x' } })
      assert.equal(res.status, 200)
      await res.text()
      const seen = upstream.requests.at(-1)!
      assert.equal(seen.headers.traceparent, traceparent)
      assert.equal(seen.headers.tracestate, 'vendor=x')
      assert.equal(await gateway.flushTraces(), undefined)
    } finally {
      delete process.env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']
      await gateway.close()
      await receiver.close()
    }
    assert.deepEqual(receiver.bodies, [])
  })
})

test('provider calls are named from what oauth4webapi and the provider cache send', () => {
  const token = new URL('https://login.example.com/token')
  const form = (fields: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(fields) })
  assert.equal(providerCall(token, form({ grant_type: 'authorization_code', code: 'c' })), 'token_exchange')
  assert.equal(providerCall(token, form({ grant_type: 'refresh_token', refresh_token: 'r' })), 'refresh')
  assert.equal(providerCall(token, form({ grant_type: 'client_credentials' })), 'token')
  const revoke = new URL('https://login.example.com/revoke')
  assert.equal(providerCall(revoke, form({ token: 't', token_type_hint: 'refresh_token' })), 'revoke')
  const discovery = new URL('https://login.example.com/realms/main/.well-known/openid-configuration')
  assert.equal(providerCall(discovery, { method: 'GET' }), 'discovery')
  assert.equal(providerCall(new URL('https://login.example.com/certs'), undefined), 'jwks')
})

test('with tracing off no part of the OpenTelemetry SDK is loaded; configured, it is', async () => {
  const src = new URL('../../src/', import.meta.url)
  // Records every module resolved, then imports the gateway and asks for tracing without and with config.
  const script = `
    import { registerHooks } from 'node:module'
    const seen = new Set()
    registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); seen.add(r.url); return r } })
    const sdk = () => [...seen].filter((u) => /@opentelemetry\\/(sdk-trace|exporter-|core|resources)|\\/trace\\/otel\\.ts$/.test(u))
    await import(${JSON.stringify(new URL('app.ts', src).href)})
    const { startTracing } = await import(${JSON.stringify(new URL('trace/start.ts', src).href)})
    const { silentLogger } = await import(${JSON.stringify(new URL('core/ports.ts', src).href)})
    const url = new URL('http://localhost')
    const off = await startTracing(undefined, url, silentLogger)
    const withoutConfig = sdk()
    const traces = { sample_ratio: 0, service_name: 'gatehouse', trust_incoming_trace: false, record_client_address: false }
    await (await startTracing(traces, url, silentLogger)).shutdown()
    console.log(JSON.stringify({ off: off === undefined, withoutConfig, withConfig: sdk().length }))
  `
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    timeout: 60_000,
  })
  const result = JSON.parse(stdout.trim().split('\n').at(-1)!)
  assert.equal(result.off, true)
  assert.deepEqual(result.withoutConfig, [])
  assert.ok(result.withConfig > 0, 'configured, the SDK is loaded (the probe sees it)')
})
