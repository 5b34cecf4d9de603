import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http'
import type { Duplex, Writable } from 'node:stream'
import { type buildConnector, type Dispatcher, Pool } from 'undici'
import {
  type FilterResponseHeadersOptions,
  filterResponseHeaders,
  type UpstreamHeaders,
} from './forward-headers.ts'

/**
 * Why an upstream exchange failed: `connect` (refused, unreachable, DNS), `timeout` (connect, headers or body
 * timeout), `reset` (the upstream closed or reset the connection), `other` (anything else, e.g. invalid headers).
 */
export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | 'other'

/** Called once per failed exchange, for logs and metrics. Never called when the client went away first. */
export type UpstreamErrorListener = (kind: UpstreamErrorKind, err: Error) => void

/** Options of {@link createUpstream}. */
export interface CreateUpstreamOptions {
  /** `http:` or `https:` URL of the application; its path (e.g. `/app`) is prefixed to every forwarded path. */
  url: string
  /** Most keep-alive connections to open to the upstream. Default: unlimited (one per concurrent request). */
  connections?: number | undefined
  /** Time allowed to open a connection, in ms. Default `10_000`. */
  connectTimeoutMs?: number | undefined
  /** Time allowed for the upstream's response headers once the request is sent, in ms. Default `60_000`. */
  headersTimeoutMs?: number | undefined
  /** Longest pause between two chunks of the upstream's response body, in ms; `0` disables. Default `300_000`. */
  bodyTimeoutMs?: number | undefined
  /**
   * Opens the connections instead of undici's default connector, e.g. one that records the TLS certificate
   * of every handshake (`createObservingConnector`). It must apply `connectTimeoutMs` itself.
   */
  connector?: buildConnector.connector | undefined
}

/** Options of {@link Upstream.forward}. */
export interface ForwardOptions {
  /** Path and query to request, starting with `/`; the upstream URL's base path is prefixed. */
  path: string
  /** Request headers to send, usually from `buildUpstreamHeaders`. */
  headers: UpstreamHeaders
  /** Headers to add to the response: security headers if absent, the gateway's `Set-Cookie`. */
  responseHeaders?: FilterResponseHeadersOptions | undefined
  onError?: UpstreamErrorListener | undefined
  /** Told the upstream's status, then that the exchange ended (a trace span). */
  observer?: { status(statusCode: number): void; end(err?: Error): void } | undefined
}

/** Options of {@link Upstream.upgrade}. */
export interface UpgradeOptions {
  /** Path and query to request, starting with `/`; the upstream URL's base path is prefixed. */
  path: string
  /** Request headers to send, usually from `buildUpstreamHeaders(req, { upgrade: true, … })`. */
  headers: UpstreamHeaders
  onError?: UpstreamErrorListener | undefined
}

/** A keep-alive connection pool to one application, and the two ways of passing a client's request to it. */
export interface Upstream {
  /** The application's URL, as given to {@link createUpstream}. */
  readonly url: URL
  /**
   * Streams the request body to the upstream and the response back, without buffering and with backpressure
   * both ways. Failures before the response starts are answered with 502 (or 504 on a timeout), as HTML when
   * the client accepts `text/html` and JSON otherwise; a failure after it started destroys the client socket.
   * A client that goes away aborts the upstream request.
   */
  forward(req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): void
  /**
   * Passes an already authorised WebSocket upgrade through (as `Upgrade: websocket`, whatever else the
   * client listed), then pipes bytes both ways. Any other upgrade is answered 400 and closed, the upstream
   * not called (see {@link isWebSocketUpgrade}).
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, opts: UpgradeOptions): void
  /** Waits for requests in flight, then closes every upstream connection. */
  close(): Promise<void>
}

/**
 * Whether `req` may be tunnelled to the upstream: a `GET` whose `Upgrade` lists `websocket` (RFC 6455 §4.1),
 * compared without regard to case. Any other protocol, `h2c` above all (an h2c tunnel through a proxy
 * reaches the upstream's every path unchecked), is not.
 */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  if (req.method !== 'GET') return false
  const upgrade = req.headers.upgrade
  if (upgrade === undefined) return false
  for (const token of upgrade.split(',')) {
    if (token.trim().toLowerCase() === 'websocket') return true
  }
  return false
}

const CONNECT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRNOTAVAIL',
])
const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
])
const RESET_CODES: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET'])

/** Sorts an error from undici or `node:net` into an {@link UpstreamErrorKind}. */
export function classifyUpstreamError(err: unknown): UpstreamErrorKind {
  if (!(err instanceof Error)) return 'other'
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string') {
    if (CONNECT_CODES.has(code)) return 'connect'
    if (TIMEOUT_CODES.has(code)) return 'timeout'
    if (RESET_CODES.has(code)) return 'reset'
  }
  // Happy eyeballs reports every failed address at once.
  if (err instanceof AggregateError && err.errors.length > 0) return classifyUpstreamError(err.errors[0])
  return 'other'
}

interface ErrorPage {
  status: number
  reason: string
  html: Buffer
  json: Buffer
}

function errorPage(status: number, error: string, message: string): ErrorPage {
  const reason = STATUS_CODES[status]!
  const html =
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>' +
    `${status} ${reason}</title></head><body><h1>${status} ${reason}</h1><p>${message}</p></body></html>\n`
  return {
    status,
    reason,
    html: Buffer.from(html),
    json: Buffer.from(JSON.stringify({ error, message }) + '\n'),
  }
}

const BAD_GATEWAY = errorPage(502, 'bad_gateway', 'The application behind the gateway could not be reached.')
const GATEWAY_TIMEOUT = errorPage(
  504,
  'gateway_timeout',
  'The application behind the gateway did not answer in time.',
)

function pageFor(kind: UpstreamErrorKind): ErrorPage {
  return kind === 'timeout' ? GATEWAY_TIMEOUT : BAD_GATEWAY
}

const TEXT_HTML = /text\/html/i

function wantsHTML(req: IncomingMessage): boolean {
  const accept = req.headers.accept
  return accept !== undefined && TEXT_HTML.test(accept)
}

function errorHeaders(
  page: ErrorPage,
  html: boolean,
  extra: FilterResponseHeadersOptions | undefined,
): string[] {
  const body = html ? page.html : page.json
  return filterResponseHeaders(
    [
      'content-type',
      html ? 'text/html; charset=utf-8' : 'application/json',
      'content-length',
      String(body.length),
      'cache-control',
      'no-store',
    ],
    extra,
  )
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function rawHeaderList(
  controller: Dispatcher.DispatchController,
  parsed: Record<string, unknown>,
): Array<Buffer | string> {
  const raw = controller.rawHeaders
  if (Array.isArray(raw)) return raw
  // Not reached with undici 7's Pool; kept so a different dispatcher still works.
  const list: string[] = []
  for (const name in parsed) {
    const value = parsed[name]
    if (Array.isArray(value)) for (const v of value) list.push(name, String(v))
    else if (value !== undefined) list.push(name, String(value))
  }
  return list
}

const CLIENT_GONE = 'client closed the connection'

// Handler states: waiting for the response, streaming it to the client, finished (either way).
const WAITING = 0
const STREAMING = 1
const DONE = 2
type HandlerState = typeof WAITING | typeof STREAMING | typeof DONE

// The client may be gone before its 'close' event has fired.
function responseClosed(res: ServerResponse): boolean {
  return res.destroyed || (res.socket?.destroyed ?? false)
}

// What both handlers share: aborting when the client goes away, streaming the body with backpressure, and
// reporting a failure. A class rather than closures: the hot path allocates one object.
abstract class RelayHandler<
  Client extends Writable,
  Options extends Pick<ForwardOptions, 'onError' | 'observer'>,
> implements Dispatcher.DispatchHandler
{
  readonly req: IncomingMessage
  readonly client: Client
  readonly opts: Options
  controller: Dispatcher.DispatchController | null = null
  state: HandlerState = WAITING
  clientGone = false
  listeningForDrain = false

  constructor(req: IncomingMessage, client: Client, opts: Options) {
    this.req = req
    this.client = client
    this.opts = opts
    client.once('close', () => this.onClientClose())
  }

  /** Whether the client's connection is already gone. */
  abstract clientClosed(): boolean

  /** Answers a failure that happened before the response started. */
  abstract sendErrorPage(page: ErrorPage, html: boolean): void

  onClientClose(): void {
    if (this.state === DONE) return
    this.clientGone = true
    this.controller?.abort(new Error(CLIENT_GONE))
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.clientGone) controller.abort(new Error(CLIENT_GONE))
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.client.write(chunk)) return
    controller.pause()
    if (!this.listeningForDrain) {
      this.listeningForDrain = true
      this.client.on('drain', () => this.controller?.resume())
    }
  }

  onResponseEnd(): void {
    this.state = DONE
    this.client.end()
    this.opts.observer?.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    const started = this.state === STREAMING
    this.state = DONE
    this.opts.observer?.end(err)
    if (this.clientGone || this.clientClosed()) return
    const kind = classifyUpstreamError(err)
    this.opts.onError?.(kind, err)
    if (started) {
      this.client.destroy()
      return
    }
    this.sendErrorPage(pageFor(kind), wantsHTML(this.req))
  }
}

// One per forwarded request.
class ForwardHandler extends RelayHandler<ServerResponse, ForwardOptions> {
  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    // 1xx: Node's server answers `100 Continue` itself; other interim responses are not relayed.
    if (statusCode < 200 || this.clientGone) return
    try {
      const list = filterResponseHeaders(rawHeaderList(controller, headers), this.opts.responseHeaders)
      this.client.writeHead(statusCode, statusMessage || undefined, list)
      this.opts.observer?.status(statusCode)
    } catch (err) {
      controller.abort(asError(err))
      return
    }
    this.state = STREAMING
  }

  override clientClosed(): boolean {
    return responseClosed(this.client)
  }

  override sendErrorPage(page: ErrorPage, html: boolean): void {
    const res = this.client
    if (res.headersSent) {
      res.destroy()
      return
    }
    res.writeHead(page.status, errorHeaders(page, html, this.opts.responseHeaders))
    res.end(html ? page.html : page.json)
  }
}

function latin1(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1')
}

function writeHead(
  socket: Duplex,
  status: number,
  reason: string,
  rawHeaders: ReadonlyArray<Buffer | string>,
): void {
  let head = `HTTP/1.1 ${status} ${reason}\r\n`
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    head += `${latin1(rawHeaders[i]!)}: ${latin1(rawHeaders[i + 1]!)}\r\n`
  }
  socket.write(head + '\r\n', 'latin1')
}

// Pipes two sockets into each other. No half-open connections: when either side ends, ours ends too (pipe
// forwards the FIN to the other), and when either closes or fails, the other is destroyed.
function splice(a: Duplex, b: Duplex): void {
  for (const [from, to] of [
    [a, b],
    [b, a],
  ] as const) {
    from.on('error', () => from.destroy())
    from.once('end', () => from.end())
    from.once('close', () => to.destroy())
    from.pipe(to)
  }
}

// One per upgrade request: relays the upstream's 101 and then bytes both ways, or its non-101 answer.
class UpgradeHandler extends RelayHandler<Duplex, UpgradeOptions> {
  readonly head: Buffer

  constructor(req: IncomingMessage, socket: Duplex, head: Buffer, opts: UpgradeOptions) {
    super(req, socket, opts)
    this.head = head
    // After 'upgrade' Node's server no longer listens for socket errors: an unhandled one would crash.
    socket.on('error', () => socket.destroy())
  }

  onRequestUpgrade(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    upstream: Duplex,
  ): void {
    this.state = DONE
    const client = this.client
    if (this.clientGone || client.destroyed) {
      upstream.destroy()
      return
    }
    writeHead(
      client,
      statusCode,
      STATUS_CODES[statusCode] ?? 'Switching Protocols',
      rawHeaderList(controller, headers),
    )
    if (this.head.length > 0) upstream.write(this.head)
    splice(client, upstream)
  }

  // The upstream refused the upgrade with an ordinary response: relay it and close.
  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200 || this.clientGone) return
    const list = filterResponseHeaders(rawHeaderList(controller, headers))
    list.push('connection', 'close')
    writeHead(this.client, statusCode, statusMessage || STATUS_CODES[statusCode] || 'Unknown', list)
    this.state = STREAMING
  }

  override clientClosed(): boolean {
    return this.client.destroyed
  }

  override sendErrorPage(page: ErrorPage, html: boolean): void {
    const list = errorHeaders(page, html, undefined)
    list.push('connection', 'close')
    writeHead(this.client, page.status, page.reason, list)
    this.client.end(html ? page.html : page.json)
  }
}

const UPGRADE_REFUSED_BODY =
  '{"error":"upgrade_refused","message":"Only WebSocket connections are upgraded."}\n'
const UPGRADE_REFUSED =
  'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\n' +
  `content-length: ${Buffer.byteLength(UPGRADE_REFUSED_BODY)}\r\n\r\n${UPGRADE_REFUSED_BODY}`

/** Answers an upgrade that is not a WebSocket one ({@link isWebSocketUpgrade}) with 400 `upgrade_refused`, and closes. */
export function refuseUpgrade(socket: Duplex): void {
  socket.end(UPGRADE_REFUSED)
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`createUpstream: ${name} must be a finite number >= 0, got ${String(value)}`)
  }
  return value
}

/**
 * Creates a keep-alive pool to one upstream application (undici `Pool`, HTTP/1.1).
 *
 * Throws a `TypeError` at once on a malformed URL or option.
 *
 * @example
 * ```ts
 * const upstream = createUpstream({ url: 'http://127.0.0.1:3000/app', headersTimeoutMs: 30_000 })
 * server.on('request', (req, res) => {
 *   upstream.forward(req, res, { path: req.url ?? '/', headers: buildUpstreamHeaders(req, facts) })
 * })
 * ```
 */
export function createUpstream(options: CreateUpstreamOptions): Upstream {
  let url: URL
  try {
    url = new URL(options.url)
  } catch {
    throw new TypeError(
      `createUpstream: url must be an absolute http: or https: URL, got ${JSON.stringify(options.url)}`,
    )
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`createUpstream: url must use http: or https:, got ${JSON.stringify(url.protocol)}`)
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new TypeError('createUpstream: url must not carry a query, a fragment or credentials')
  }
  const connections = options.connections
  if (connections !== undefined && (!Number.isInteger(connections) || connections < 1)) {
    throw new TypeError(`createUpstream: connections must be an integer >= 1, got ${String(connections)}`)
  }
  const connectTimeoutMs = nonNegative('connectTimeoutMs', options.connectTimeoutMs, 10_000)
  const headersTimeoutMs = nonNegative('headersTimeoutMs', options.headersTimeoutMs, 60_000)
  const bodyTimeoutMs = nonNegative('bodyTimeoutMs', options.bodyTimeoutMs, 300_000)
  const basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '')

  const pool = new Pool(url.origin, {
    connections: connections ?? null,
    connect: options.connector ?? { timeout: connectTimeoutMs },
    headersTimeout: headersTimeoutMs,
    bodyTimeout: bodyTimeoutMs,
  })

  return {
    url,
    forward(req, res, opts) {
      // The client may have left while the caller was deciding: its 'close' has fired already.
      if (responseClosed(res)) return
      const handler = new ForwardHandler(req, res, opts)
      const length = req.headers['content-length']
      // Without Content-Length or Transfer-Encoding there is no body (RFC 9112 §6.3); passing the stream anyway
      // would make undici send a chunked body on a GET.
      const hasBody = length !== undefined ? length !== '0' : req.headers['transfer-encoding'] !== undefined
      try {
        pool.dispatch(
          {
            path: basePath + opts.path,
            method: req.method ?? 'GET',
            headers: opts.headers,
            body: hasBody ? req : null,
          },
          handler,
        )
      } catch (err) {
        // undici validates headers synchronously (e.g. a value with a control character).
        handler.onResponseError(null, asError(err))
      }
    },

    upgrade(req, socket, head, opts) {
      if (socket.destroyed) return
      if (!isWebSocketUpgrade(req)) {
        refuseUpgrade(socket)
        return
      }
      const handler = new UpgradeHandler(req, socket, head, opts)
      // undici writes `Connection: upgrade` and `Upgrade` itself and refuses them among the headers.
      const headers: UpstreamHeaders = Object.create(null)
      for (const name in opts.headers) {
        if (name !== 'upgrade' && name !== 'connection') headers[name] = opts.headers[name]!
      }
      try {
        pool.dispatch(
          { path: basePath + opts.path, method: 'GET', headers, body: null, upgrade: 'websocket' },
          handler,
        )
      } catch (err) {
        handler.onResponseError(null, asError(err))
      }
    },

    close() {
      return pool.close()
    },
  }
}
