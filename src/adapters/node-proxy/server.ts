import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http'
import { createServer as createHTTPSServer } from 'node:https'
import type { Duplex } from 'node:stream'
import { Counter } from 'prom-client'
import type { Metrics } from '../../admin/metrics.ts'
import { type Allow, type Decision, problem, type RequestFacts, type Respond } from '../../core/decisions.ts'
import type { Gatehouse } from '../../core/gatehouse.ts'
import type { Logger } from '../../core/ports.ts'
import { readFormBody } from '../../idp/form-body.ts'
import type { Tracing } from '../../trace/tracing.ts'
import { createHostCheck } from './allowed-hosts.ts'
import { buildUpstreamHeaders, hasRepeatedAuthorization } from './forward-headers.ts'
import {
  createRefusalLog,
  DEFAULT_SERVER_LIMITS,
  httpServerOptions,
  limitConnections,
  type ServerLimits,
} from './server-limits.ts'
import { isWebSocketUpgrade, refuseUpgrade, type Upstream } from './upstream.ts'

/**
 * `gatehouse`, `upstream` and `securityHeaders` are read once at the start of each request, so they may
 * be getters: a config reload swaps them, and a request in flight keeps the ones it started with.
 */
/** One app of config `apps`, as the proxy serves it. */
export interface ProxyApp {
  name: string
  gatehouse: Gatehouse
  upstream: Upstream
  /** `host[:port]` of the app's public URL: the upstream's Host (upstream_host `public`) and X-Forwarded-Host. */
  publicHost: string
  /**
   * Config `apps[].strip_prefix`: the app's path prefix (`/board`), taken off the path the upstream gets
   * and sent as X-Forwarded-Prefix. Absent: the path goes as judged.
   */
  stripPrefix?: string | undefined
}

/**
 * `path` (a judged path and query) without the first segments that make `prefix`: the segments the app
 * router matched it by, so `/board;x/y`, `/board./y` and `//board/y` (all `/board/y` to the router) lose
 * `/board` too. `/board` and `/board?q` become `/` and `/?q`.
 */
export function stripPathPrefix(path: string, prefix: string): string {
  const q = path.indexOf('?')
  const pathname = q === -1 ? path : path.slice(0, q)
  let count = prefix.split('/').length - 1
  let i = 0
  while (count > 0 && i < pathname.length) {
    // Skip the slashes before a segment (repeated ones included), then the segment.
    while (i < pathname.length && pathname.charCodeAt(i) === 0x2f) i++
    while (i < pathname.length && pathname.charCodeAt(i) !== 0x2f) i++
    count--
  }
  const rest = pathname.slice(i)
  return (rest === '' ? '/' : rest) + (q === -1 ? '' : path.slice(q))
}

export interface GatewayServerOptions {
  gatehouse: Gatehouse
  upstream: Upstream
  /** Added to every response when absent (the http_headers function). */
  securityHeaders: ReadonlyArray<readonly [string, string]>
  publicUrl: URL
  metrics: Metrics
  log: Logger
  /** Requests under these path prefixes bypass the gateway (the embedded provider in dev mode). */
  mounts?: ReadonlyArray<{ prefix: string; handler: (req: IncomingMessage, res: ServerResponse) => void }>
  /**
   * True while the process is overloaded: requests without a credential, or with one refused a moment
   * ago, are shed with 503 before any work, so those carrying a valid session or token are served first.
   */
  isOverloaded?: () => boolean
  /** Counts requests in and out while they are handled (shedding on in-flight requests). */
  inFlight?: { enter(): void; leave(): void } | undefined
  /**
   * Answers held at once for clients that keep repeating a refused credential (Respond.delayMs); past
   * this, they are answered at once with `Connection: close`. Default 10,000.
   */
  maxHeld?: number
  /** Told about every request refused for its behaviour (rate limits, sign-in loops): top offenders. */
  onRefused?: (code: string, clientAddress: string, userAgent: string | undefined) => void
  /** Serve HTTPS with this certificate chain and key (PEM); replaced without a restart by `setTLS`. */
  tls?: { cert: string | Buffer; key: string | Buffer } | undefined
  /** Header and request timeouts, connection caps (config `server`). Default `DEFAULT_SERVER_LIMITS`. */
  limits?: ServerLimits | undefined
  /**
   * Host names answered besides `publicUrl`'s (`.example.com`: that domain and every name under it); IP
   * literals and `localhost` always are. Any other `Host` gets 421 `misdirected_request`. Default none.
   */
  allowedHosts?: readonly string[] | undefined
  /**
   * The `Host` the upstream gets: `public` (`publicUrl`'s host), `upstream` (the upstream URL's own), or
   * `preserve` (the client's, which passed `allowedHosts`). `X-Forwarded-Host` is always `publicUrl`'s.
   * Default `public`.
   */
  upstreamHost?: 'public' | 'upstream' | 'preserve' | undefined
  /**
   * Several apps (config `apps`, src/core/apps.ts): the app each request is for, or the answer when
   * there is none. Its core, upstream and host replace `gatehouse`, `upstream` and `publicUrl`'s host
   * for that request. Absent: one app, and no per-request cost.
   */
  apps?: ((facts: RequestFacts) => ProxyApp | Respond) | undefined
  /** Spans for each request, its decision and its upstream exchange (src/trace/otel.ts). Default none. */
  tracing?: Tracing | undefined
}

export interface GatewayServer {
  server: Server
  /** Stop accepting, let requests in flight finish for up to `drainMs`, then close what is left. */
  drain(drainMs: number): Promise<void>
  /** HTTPS only: new connections get this certificate and key from now on (existing ones keep theirs). */
  setTLS(tls: { cert: string | Buffer; key: string | Buffer }): void
}

function factsOf(req: IncomingMessage): RequestFacts {
  const headers = req.headers
  return {
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    header(name) {
      const v = headers[name]
      return Array.isArray(v) ? v.join(', ') : v
    },
    clientAddress: req.socket.remoteAddress ?? '',
    async form(maxBytes) {
      const r = await readFormBody(req, maxBytes)
      return r.kind === 'ok' ? r.fields : r.kind
    },
  }
}

/**
 * The Node reverse-proxy adapter: translate the request into facts, ask the core, then either
 * forward to the upstream (with identity headers, without Gatehouse's cookies) or answer.
 */
export function createGatewayServer(options: GatewayServerOptions): GatewayServer {
  const { metrics, log, tracing } = options
  const proto = options.publicUrl.protocol === 'https:' ? 'https' : 'http'
  const publicHost = options.publicUrl.host
  const isAllowedHost = createHostCheck([options.publicUrl.hostname, ...(options.allowedHosts ?? [])])
  const upstreamHost = options.upstreamHost ?? 'public'
  const mounts = options.mounts ?? []
  const inFlight = options.inFlight
  const maxHeld = options.maxHeld ?? 10_000
  let held = 0
  let draining = false
  // Counts a request out of `inFlight` once: when a held answer starts waiting (it costs a timer, not
  // work, so it must not make the gateway look overloaded), or when the response closes.
  const leaveInFlight = new WeakMap<ServerResponse, () => void>()

  const onUpstreamError = (kind: 'connect' | 'timeout' | 'reset' | 'other', err: Error) => {
    metrics.upstreamErrors.inc({ kind })
    log.warn({ kind, err: err.message }, 'upstream error')
  }

  function respond(
    res: ServerResponse,
    d: Respond,
    method: string,
    securityHeaders: GatewayServerOptions['securityHeaders'],
  ) {
    if (d.delayMs !== undefined && d.delayMs > 0 && !draining) {
      if (held < maxHeld) {
        // A timer per held answer, nothing else: the client waits, Gatehouse does not (seed 003).
        held++
        metrics.heldResponses.inc()
        leaveInFlight.get(res)?.()
        const timer = setTimeout(() => {
          res.off('close', cancel)
          held--
          if (!res.destroyed) respond(res, { ...d, delayMs: undefined }, method, securityHeaders)
        }, d.delayMs)
        const cancel = () => {
          clearTimeout(timer)
          held--
        }
        res.once('close', cancel)
        return
      }
      // Too many held already: answer now, and make this client reconnect for its next try.
      res.setHeader('connection', 'close')
    }
    const headers: Record<string, string | string[]> = { ...d.headers }
    for (const [name, value] of securityHeaders) if (headers[name] === undefined) headers[name] = value
    if (d.setCookies.length > 0) headers['set-cookie'] = d.setCookies
    if (draining) headers['connection'] = 'close'
    if (d.body !== '') headers['content-length'] = String(Buffer.byteLength(d.body))
    res.writeHead(d.status, headers)
    res.end(method === 'HEAD' || d.body === '' ? undefined : d.body)
  }

  // Labelled metric children, resolved once per label set instead of hashing labels per request.
  const counters = new Map<string, { inc(): void }>()
  const histograms = {
    allow: metrics.decisionSeconds.labels('allow'),
    respond: metrics.decisionSeconds.labels('respond'),
  }
  function count(kind: Decision['kind'], code: string) {
    const key = `${kind} ${code}`
    let counter = counters.get(key)
    if (counter === undefined) {
      counter = metrics.decisions.labels(kind, code)
      counters.set(key, counter)
    }
    counter.inc()
  }
  // Config `apps`: decisions per app, beside the totals (registered only with apps).
  const appDecisions =
    options.apps === undefined
      ? undefined
      : new Counter({
          name: 'gatehouse_app_decisions_total',
          help: 'Decisions per app of config apps, by kind (allow, respond) and code',
          labelNames: ['app', 'kind', 'code'],
          registers: [metrics.registry],
        })
  const appCounters = new Map<string, { inc(): void }>()
  function countApp(name: string, decision: Decision) {
    const code = decision.kind === 'allow' ? 'allow' : decision.code
    const key = `${name} ${decision.kind} ${code}`
    let counter = appCounters.get(key)
    if (counter === undefined) {
      counter = appDecisions!.labels(name, decision.kind, code)
      appCounters.set(key, counter)
    }
    counter.inc()
  }
  function record(decision: Decision, startNs: bigint) {
    count(decision.kind, decision.kind === 'allow' ? 'allow' : decision.code)
    histograms[decision.kind].observe(Number(process.hrtime.bigint() - startNs) / 1e9)
  }

  /** Two Authorization fields: 400 before the policy, so the upstream never gets one no one checked. */
  function refuseRepeatedAuthorization(req: IncomingMessage): Respond | undefined {
    if (!hasRepeatedAuthorization(req)) return undefined
    log.info({ code: 'duplicate_authorization' }, 'request refused: more than one Authorization header')
    return problem(
      factsOf(req),
      400,
      'duplicate_authorization',
      'Bad request',
      'The request carries more than one Authorization header.',
    )
  }

  /**
   * RFC 9110 §15.5.20: a Host this gateway does not answer for, such as a name rebound to its address by
   * a hostile page (DNS rebinding), is refused before anything else.
   */
  function refuseMisdirected(req: IncomingMessage): Respond | undefined {
    if (isAllowedHost(req.headers.host)) return undefined
    log.info(
      { code: 'misdirected_request', host: req.headers.host?.slice(0, 100) },
      'request refused: not a host this gateway answers for (public_url, server.allowed_hosts)',
    )
    return problem(
      factsOf(req),
      421,
      'misdirected_request',
      'Misdirected request',
      'This server does not answer for that host name.',
    )
  }

  // What the upstream is told about the request: X-Forwarded-Host from public_url, never the client.
  function headersFor(
    req: IncomingMessage,
    decision: Allow,
    upgrade: boolean,
    host = publicHost,
    forwardedPrefix?: string,
  ) {
    const headers = buildUpstreamHeaders(req, {
      identity: decision.upstreamHeaders,
      clientAddress: req.socket.remoteAddress ?? '',
      proto,
      host,
      cookie: decision.upstreamCookie,
      upgrade,
      drop: decision.dropFromClient,
    })
    if (upstreamHost === 'public') headers['host'] = host
    else if (upstreamHost === 'upstream') delete headers['host']
    else headers['host'] ??= host
    // Set by Gatehouse only: a client's X-Forwarded-* never reaches the upstream.
    if (forwardedPrefix !== undefined) headers['x-forwarded-prefix'] = forwardedPrefix
    return headers
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse) {
    let { gatehouse, upstream } = options
    const { securityHeaders, apps } = options
    const misdirected = refuseMisdirected(req)
    if (misdirected !== undefined) {
      count('respond', misdirected.code)
      return respond(res, misdirected, req.method ?? 'GET', securityHeaders)
    }
    const url = req.url ?? '/'
    for (const m of mounts) {
      if (url === m.prefix || url.startsWith(`${m.prefix}/`) || url.startsWith(`${m.prefix}?`))
        return m.handler(req, res)
    }
    let app: ProxyApp | undefined
    if (apps !== undefined) {
      const chosen = apps(factsOf(req))
      if ('kind' in chosen) {
        count('respond', chosen.code)
        return respond(res, chosen, req.method ?? 'GET', securityHeaders)
      }
      app = chosen
      ;({ gatehouse, upstream } = app)
    }
    const start = process.hrtime.bigint()
    let decision: Decision
    if (inFlight !== undefined) {
      inFlight.enter()
      let counted = true
      const leave = () => {
        if (!counted) return
        counted = false
        inFlight.leave()
      }
      leaveInFlight.set(res, leave)
      res.once('close', leave)
    }
    const repeated = refuseRepeatedAuthorization(req)
    if (repeated !== undefined) {
      count('respond', repeated.code)
      return respond(res, repeated, req.method ?? 'GET', securityHeaders)
    }
    if (options.isOverloaded?.()) {
      const facts = factsOf(req)
      if (gatehouse.classify(facts) !== 'credential') {
        count('respond', 'shed')
        res.writeHead(503, {
          'content-type': 'application/json',
          'retry-after': '2',
          'cache-control': 'no-store',
        })
        res.end('{"error":"overloaded","error_description":"Busy: try again in a moment"}')
        return
      }
    }
    // Tracing off: this one test, and the client's traceparent goes upstream as it came.
    const traced = tracing === undefined ? undefined : tracing.request(req, res)
    try {
      decision =
        traced === undefined
          ? await gatehouse.handle(factsOf(req))
          : await traced.check(gatehouse, factsOf(req))
    } catch (err) {
      log.error({ err: (err as Error).message, stack: (err as Error).stack }, 'decision failed')
      count('respond', 'internal_error')
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
        res.end('Internal error\n')
      }
      return
    }
    record(decision, start)
    if (app !== undefined) countApp(app.name, decision)
    if (decision.kind === 'respond') {
      if (decision.status === 429) {
        options.onRefused?.(decision.code, req.socket.remoteAddress ?? '', req.headers['user-agent'])
      }
      return respond(res, decision, req.method ?? 'GET', securityHeaders)
    }
    if (draining) res.setHeader('connection', 'close')
    const headers = headersFor(req, decision, false, app?.publicHost, app?.stripPrefix)
    const path =
      app?.stripPrefix === undefined ? decision.path : stripPathPrefix(decision.path, app.stripPrefix)
    upstream.forward(req, res, {
      path,
      headers,
      observer: traced?.upstream(upstream.url, req.method ?? 'GET', path, headers),
      responseHeaders: {
        addIfAbsent: securityHeaders as Array<[string, string]>,
        append: decision.setCookies.map((c): [string, string] => ['set-cookie', c]),
      },
      onError: onUpstreamError,
    })
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
    let { gatehouse, upstream } = options
    const { apps } = options
    socket.on('error', () => socket.destroy())
    // Only reached by other protocols on a Node without shouldUpgradeCallback (added in 24.9).
    if (!isWebSocketUpgrade(req)) {
      count('respond', 'upgrade_refused')
      return refuseUpgrade(socket)
    }
    let decision: Decision
    let app: ProxyApp | undefined
    try {
      const chosen = apps?.(factsOf(req))
      if (chosen !== undefined && !('kind' in chosen)) {
        app = chosen
        ;({ gatehouse, upstream } = app)
      }
      decision =
        refuseMisdirected(req) ??
        (chosen !== undefined && 'kind' in chosen ? chosen : undefined) ??
        refuseRepeatedAuthorization(req) ??
        (await gatehouse.handle(factsOf(req)))
    } catch (err) {
      log.error({ err: (err as Error).message }, 'decision failed (upgrade)')
      socket.end('HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
      return
    }
    count(decision.kind, decision.kind === 'allow' ? 'allow' : decision.code)
    if (decision.kind === 'respond') {
      // No upgrade: answer with the decision's status and close.
      const lines = [`HTTP/1.1 ${decision.status} ${STATUS_CODES[decision.status] ?? 'Refused'}`]
      for (const [k, v] of Object.entries(decision.headers)) lines.push(`${k}: ${v}`)
      lines.push('connection: close', `content-length: ${Buffer.byteLength(decision.body)}`)
      socket.end(`${lines.join('\r\n')}\r\n\r\n${decision.body}`)
      return
    }
    if (app !== undefined) countApp(app.name, decision)
    const headers = headersFor(req, decision, true, app?.publicHost, app?.stripPrefix)
    const path =
      app?.stripPrefix === undefined ? decision.path : stripPathPrefix(decision.path, app.stripPrefix)
    upstream.upgrade(req, socket, head, { path, headers, onError: onUpstreamError })
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    onRequest(req, res).catch((err) => {
      log.error({ err: (err as Error).message }, 'request failed')
      res.destroy()
    })
  }
  // A slow client costs a socket, not a thread; these bound how long it may hold one, and how many.
  const limits = options.limits ?? DEFAULT_SERVER_LIMITS
  const serverOptions = {
    ...httpServerOptions(limits),
    // Only WebSocket is tunnelled. Any other Upgrade (h2c: RFC 9113 §3.1 retired it, and a tunnel to the
    // upstream would carry requests Gatehouse never judges) is ignored, as RFC 9110 §7.8 allows: the
    // request is served as an ordinary one, without its Upgrade, Connection and HTTP2-Settings.
    shouldUpgradeCallback: isWebSocketUpgrade,
  }
  // An https.Server has every method of an http.Server used here (close*Connections, 'upgrade').
  const server: Server =
    options.tls === undefined
      ? createServer(serverOptions, handler)
      : (createHTTPSServer({ ...serverOptions, ...options.tls }, handler) as unknown as Server)
  const refused = new Counter({
    name: 'gatehouse_connections_refused_total',
    help: 'Connections closed at once because a cap was reached (max_connections, max_connections_per_client)',
    labelNames: ['reason'],
    registers: [metrics.registry],
  })
  const logRefusal = createRefusalLog(log)
  limitConnections(server, limits, (reason, client) => {
    refused.inc({ reason })
    logRefusal(reason, client)
  })
  server.on('upgrade', (req, socket, head) => {
    onUpgrade(req, socket, head).catch(() => socket.destroy())
  })
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy()
    const status =
      err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
  })

  return {
    server,
    setTLS(tls) {
      if (options.tls === undefined) throw new TypeError('setTLS: this server does not terminate TLS')
      ;(server as unknown as { setSecureContext(o: object): void }).setSecureContext(tls)
    },
    drain(drainMs) {
      draining = true
      // server.close() stops accepting and resolves once every connection has ended: idle keep-alive
      // connections are closed at once, busy ones after their response (sent with Connection: close).
      // Whatever is still open after drainMs is cut.
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), drainMs)
        timer.unref()
        server.close(() => {
          clearTimeout(timer)
          resolve()
        })
        server.closeIdleConnections()
      })
    },
  }
}
