// A fault-injecting HTTP proxy for outage drills: it sits in front of a real provider and makes chosen
// paths fail in controlled ways (error status, hang, reset, slow answer, garbage, rewritten body).

import {
  Agent,
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo } from 'node:net'

/** What the proxy does with a matching request. Only `pass`, `slow` and `rewrite` reach the target. */
export type Fault =
  | { kind: 'pass' }
  /** Answer `status` with `body` (default empty); the content type follows the body's first character. */
  | { kind: 'status'; status: number; body?: string }
  /** Accept the request and never answer, until the client gives up or the proxy stops or closes. */
  | { kind: 'hang' }
  /** Drop the connection without a response (a TCP reset). */
  | { kind: 'reset' }
  /** Wait `delayMs`, then forward. A client that gives up during the wait is never forwarded. */
  | { kind: 'slow'; delayMs: number }
  /** 200, `content-type: application/json`, and a body that is not JSON. */
  | { kind: 'garbage' }
  /** Forward, then replace the (utf-8) body with `transform(body, contentType)`; `content-length` is fixed. */
  | { kind: 'rewrite'; transform: (body: string, contentType: string | undefined) => string }

/** Matches a request path (without the query): a string is compared exactly. */
export type PathMatcher = string | RegExp | ((path: string) => boolean)

export interface FaultProxyOptions {
  /** Port to listen on, on 127.0.0.1. Default 0 (random). */
  port?: number
  /**
   * Host header sent to the target: `'client'` (default) keeps the client's, i.e. the proxy's
   * `127.0.0.1:<port>`; `'target'` sends the target's host.
   */
  hostHeader?: 'client' | 'target'
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  /**
   * Fault for requests whose path (without query) matches. Rules are checked in the order they were first
   * set and the first match applies; setting the same matcher again (equal string, RegExp with the same
   * source and flags, same function) replaces its fault in place. Unmatched requests pass.
   */
  set(match: PathMatcher, fault: Fault): void
  /** Remove every rule: every request passes again. Counts are kept. */
  clear(): void
  /** Requests seen, all or those whose path (without query) matches, including failed ones. */
  count(match?: PathMatcher): number
  /** Stop listening and drop open connections: connections are refused from now on (a "down" provider). */
  stop(): Promise<void>
  /** Listen again on the same port. No-op when listening. */
  restart(): Promise<void>
  /** Close everything (listener, hanging and in-flight requests, timers). Idempotent. */
  close(): Promise<void>
}

// RFC 9110 §7.6.1: hop-by-hop fields, plus any named in Connection, are not forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

const GARBAGE_BODY = '<!doctype html><title>Bad Gateway</title>{"issuer": '

interface Rule {
  match: PathMatcher
  fault: Fault
}

/**
 * Starts a fault-injecting proxy on `http://127.0.0.1:<port>` in front of `targetOrigin` (an `http:` origin;
 * any path on it is ignored). Every answer carries `Connection: close`, so a client's connection pool never
 * outlives a `stop()`. When the target cannot be reached the proxy answers 502.
 *
 * @example
 * const proxy = await startFaultProxy(idp.origin)
 * proxy.set('/_idp/jwks', { kind: 'status', status: 504, body: '<html>Gateway Timeout</html>' })
 * proxy.set(/\/token$/, { kind: 'hang' })
 * // … drive the gateway against proxy.url …
 * assert.equal(proxy.count('/_idp/jwks'), 1)
 * await proxy.close()
 */
export async function startFaultProxy(
  targetOrigin: string,
  options: FaultProxyOptions = {},
): Promise<FaultProxy> {
  let target: URL
  try {
    target = new URL(targetOrigin)
  } catch {
    throw new TypeError(
      `startFaultProxy: targetOrigin must be an http: URL, got ${JSON.stringify(targetOrigin)}`,
    )
  }
  if (target.protocol !== 'http:') {
    throw new TypeError(`startFaultProxy: targetOrigin must be an http: URL, got ${target.protocol}`)
  }
  const hostHeader = options.hostHeader ?? 'client'
  if (hostHeader !== 'client' && hostHeader !== 'target') {
    throw new TypeError(`startFaultProxy: hostHeader must be 'client' or 'target', got ${String(hostHeader)}`)
  }
  const requestedPort = options.port ?? 0
  if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
    throw new TypeError(`startFaultProxy: port must be an integer in 0..65535, got ${requestedPort}`)
  }

  const rules: Rule[] = []
  const seen: string[] = []
  const timers = new Set<NodeJS.Timeout>()
  // No keep-alive towards the target either: it may be restarted on the same port during a drill.
  const agent = new Agent({ keepAlive: false })
  let server: Server | undefined
  let closed = false
  // stop/restart/close run one after another, whatever order the drill calls them in.
  let lifecycle: Promise<void> = Promise.resolve()

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/'
    seen.push(path)
    res.setHeader('connection', 'close')
    const fault = rules.find((r) => matches(r.match, path))?.fault ?? { kind: 'pass' }
    switch (fault.kind) {
      case 'pass':
      case 'rewrite':
        forward(req, res, fault)
        return
      case 'slow': {
        const timer = setTimeout(() => {
          timers.delete(timer)
          forward(req, res, fault)
        }, fault.delayMs)
        timers.add(timer)
        res.once('close', () => {
          clearTimeout(timer)
          timers.delete(timer)
        })
        return
      }
      case 'status': {
        req.resume()
        const body = fault.body ?? ''
        const headers: OutgoingHttpHeaders = { 'content-length': Buffer.byteLength(body) }
        if (body !== '') headers['content-type'] = contentTypeFor(body)
        res.writeHead(fault.status, headers).end(body)
        return
      }
      case 'garbage':
        req.resume()
        res
          .writeHead(200, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(GARBAGE_BODY),
          })
          .end(GARBAGE_BODY)
        return
      case 'hang':
        req.resume()
        return
      case 'reset':
        req.socket.resetAndDestroy()
        return
    }
  }

  function forward(req: IncomingMessage, res: ServerResponse, fault: Fault): void {
    const rewrite = fault.kind === 'rewrite' ? fault.transform : undefined
    const headers = endToEnd(req.headers)
    if (hostHeader === 'target') headers['host'] = target.host
    if (rewrite) {
      // The transform needs the whole, uncompressed representation, not a 304.
      delete headers['accept-encoding']
      delete headers['if-none-match']
      delete headers['if-modified-since']
    }
    const upstream = request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
      agent,
    })
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy()
    })
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) {
        res.destroy()
        return
      }
      const body = `fault-proxy: target ${target.origin} failed: ${err.code ?? err.message}`
      res.writeHead(502, {
        'content-type': 'text/plain; charset=utf-8',
        'content-length': Buffer.byteLength(body),
      })
      res.end(body)
    })
    upstream.once('response', (answer) => {
      const answerHeaders = endToEnd(answer.headers)
      const status = answer.statusCode ?? 502
      const bodyless = req.method === 'HEAD' || status === 204 || status === 304
      if (!rewrite || bodyless) {
        res.writeHead(status, answer.statusMessage, answerHeaders)
        answer.pipe(res)
        answer.once('error', () => res.destroy())
        return
      }
      const chunks: Buffer[] = []
      answer.on('data', (chunk: Buffer) => chunks.push(chunk))
      answer.once('error', () => res.destroy())
      answer.once('end', () => {
        let body: string
        try {
          const encoding = answer.headers['content-encoding']
          if (encoding !== undefined && encoding !== 'identity') {
            throw new Error(`cannot rewrite a body with content-encoding ${encoding}`)
          }
          body = rewrite(Buffer.concat(chunks).toString('utf8'), answer.headers['content-type'])
        } catch (err) {
          const message = `fault-proxy: rewrite failed: ${err instanceof Error ? err.message : String(err)}`
          res.writeHead(500, {
            'content-type': 'text/plain; charset=utf-8',
            'content-length': Buffer.byteLength(message),
          })
          res.end(message)
          return
        }
        // A different body is a different representation: the target's validator no longer describes it.
        delete answerHeaders['etag']
        answerHeaders['content-length'] = Buffer.byteLength(body)
        res.writeHead(status, answer.statusMessage, answerHeaders)
        res.end(body)
      })
    })
    req.pipe(upstream)
  }

  function listen(port: number): Promise<Server> {
    const s = createServer(handle)
    return new Promise((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, '127.0.0.1', () => {
        s.off('error', reject)
        resolve(s)
      })
    })
  }

  function shutDown(): Promise<void> {
    for (const timer of timers) clearTimeout(timer)
    timers.clear()
    const s = server
    server = undefined
    if (!s) return Promise.resolve()
    return new Promise((resolve) => {
      s.close(() => resolve())
      // Hanging and in-flight requests would otherwise hold the listener (and the process) open.
      s.closeAllConnections()
    })
  }

  function enqueue(step: () => Promise<void>): Promise<void> {
    const next = lifecycle.then(step)
    lifecycle = next.catch(() => {})
    return next
  }

  server = await listen(requestedPort)
  const port = (server.address() as AddressInfo).port

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    set(match, fault) {
      validate(fault)
      const existing = rules.find((r) => sameMatcher(r.match, match))
      if (existing) existing.fault = fault
      else rules.push({ match, fault })
    },
    clear() {
      rules.length = 0
    },
    count(match) {
      if (match === undefined) return seen.length
      return seen.filter((path) => matches(match, path)).length
    },
    stop: () => enqueue(shutDown),
    restart: () =>
      enqueue(async () => {
        if (closed) throw new Error('fault-proxy: restart() after close()')
        if (!server) server = await listen(port)
      }),
    close: () =>
      enqueue(async () => {
        if (closed) return
        closed = true
        await shutDown()
        agent.destroy()
      }),
  }
}

function matches(match: PathMatcher, path: string): boolean {
  if (typeof match === 'string') return match === path
  if (match instanceof RegExp) {
    // A /g or /y RegExp keeps state between test() calls.
    match.lastIndex = 0
    return match.test(path)
  }
  return match(path)
}

function sameMatcher(a: PathMatcher, b: PathMatcher): boolean {
  if (a === b) return true
  return a instanceof RegExp && b instanceof RegExp && a.source === b.source && a.flags === b.flags
}

function validate(fault: Fault): void {
  switch (fault.kind) {
    case 'status':
      if (!Number.isInteger(fault.status) || fault.status < 100 || fault.status > 999) {
        throw new TypeError(`fault-proxy: status must be an integer in 100..999, got ${fault.status}`)
      }
      return
    case 'slow':
      if (!Number.isFinite(fault.delayMs) || fault.delayMs < 0) {
        throw new TypeError(`fault-proxy: delayMs must be a finite number >= 0, got ${fault.delayMs}`)
      }
      return
    case 'rewrite':
      if (typeof fault.transform !== 'function') {
        throw new TypeError('fault-proxy: rewrite needs a transform function')
      }
      return
    case 'pass':
    case 'hang':
    case 'reset':
    case 'garbage':
      return
    default:
      throw new TypeError(
        `fault-proxy: unknown fault kind ${JSON.stringify((fault as { kind: unknown }).kind)}`,
      )
  }
}

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter(Boolean),
  )
  const out: OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue
    out[name] = value
  }
  return out
}

function contentTypeFor(body: string): string {
  const first = body.trimStart()[0]
  if (first === '{' || first === '[') return 'application/json'
  if (first === '<') return 'text/html; charset=utf-8'
  return 'text/plain; charset=utf-8'
}
