import type { IncomingMessage } from 'node:http'
import { HOP_BY_HOP, isGatewayOwned, isHopByHop, upstreamHeaderName } from '../header-rules.ts'

/** Request headers as handed to the upstream client: lower-case names, duplicates kept as arrays. */
export type UpstreamHeaders = Record<string, string | string[]>

/** Options of {@link buildUpstreamHeaders}. */
export interface BuildUpstreamHeadersOptions {
  /** Identity headers to add after every client-sent copy was removed, e.g. `{ 'X-Auth-Request-User': 'alice' }`. */
  identity: Record<string, string>
  /** The client's address as Gatehouse saw it; becomes `X-Forwarded-For` and `X-Real-IP`. */
  clientAddress: string
  /** The scheme the client used; becomes `X-Forwarded-Proto`. */
  proto: 'http' | 'https'
  /** The host the client asked for; becomes `X-Forwarded-Host`. */
  host: string
  /** The Cookie header to send instead of the client's (Gatehouse's own cookies removed); `undefined` drops it. */
  cookie?: string | undefined
  /** Keep `Upgrade` and send `Connection: upgrade` (WebSocket passthrough). Default `false`. */
  upgrade?: boolean
  /** More names (lower case) never copied from the client, in any spelling: the decision's `dropFromClient`. */
  drop?: ReadonlySet<string> | undefined
}

// Request fields never copied from the client (besides isGatewayOwned's, `forwarded` and `x-real-ip` among them).
const REQUEST_DROPPED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'cookie',
  // Node's server has already answered `100 Continue` by the time we forward, and undici refuses `Expect`.
  'expect',
  // Connection-specific (RFC 9113 §3.1): it only goes with an h2c Upgrade, which is never passed on.
  'http2-settings',
])

// Fields in the client's Connection header that must not be honoured as hop-by-hop names:
// a client cannot make Gatehouse drop the Host it routes by.
const NOT_NOMINATABLE: ReadonlySet<string> = new Set(['host'])

function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  const joined = typeof value === 'string' ? value : value.join(',')
  let tokens: Set<string> | undefined
  for (const part of joined.split(',')) {
    const token = part.trim().toLowerCase()
    // `keep-alive`, `close` and `upgrade` are already handled; skip the work for the common case.
    if (token === '' || token === 'keep-alive' || token === 'close' || token === 'upgrade') continue
    if (NOT_NOMINATABLE.has(token)) continue
    tokens ??= new Set()
    tokens.add(token)
  }
  return tokens
}

function append(headers: UpstreamHeaders, name: string, value: string): void {
  const existing = headers[name]
  if (existing === undefined) headers[name] = value
  else if (typeof existing === 'string') headers[name] = [existing, value]
  else existing.push(value)
}

/**
 * Builds the request headers sent to the upstream from the client's request.
 *
 * Copies the client's headers (from `req.rawHeaders`, keeping duplicates) except hop-by-hop headers, headers
 * named in the client's `Connection` header, `Expect`, and every header Gatehouse owns (`x-auth-request-*`,
 * `x-gatehouse-*`, `x-forwarded-*`, `forwarded`, `x-real-ip`): client-sent forwarding headers are not trusted.
 * Names are compared with `_` read as `-` (`X_Auth_Request_User` is dropped too), as CGI upstreams read them.
 * Then sets `cookie` (from `opts.cookie`), `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`,
 * `x-real-ip`, and finally the identity headers, which replace any client header of the same name.
 * `Host` is kept as the client sent it (the first one if it sent several); the gateway server then sets
 * it as `server.upstream_host` says.
 *
 * @example
 * ```ts
 * const headers = buildUpstreamHeaders(req, {
 *   identity: { 'X-Auth-Request-User': 'alice' },
 *   clientAddress: req.socket.remoteAddress ?? '',
 *   proto: 'https',
 *   host: req.headers.host ?? '',
 *   cookie: 'theme=dark',
 * })
 * ```
 */
export function buildUpstreamHeaders(
  req: IncomingMessage,
  opts: BuildUpstreamHeadersOptions,
): UpstreamHeaders {
  const headers: UpstreamHeaders = Object.create(null)
  const nominated = connectionTokens(req.headers.connection)
  const keepUpgrade = opts.upgrade === true
  const drop = opts.drop
  const raw = req.rawHeaders
  let sawHost = false
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    if (REQUEST_DROPPED.has(name)) {
      if (keepUpgrade && name === 'upgrade') append(headers, name, raw[i + 1]!)
      continue
    }
    // Also `X_Forwarded_For`, `Transfer_Encoding`: one field to a CGI/WSGI upstream (upstreamHeaderName).
    if (isGatewayOwned(name) || isHopByHop(name)) continue
    if (drop?.has(upstreamHeaderName(name))) continue
    if (nominated?.has(name)) continue
    if (name === 'host') {
      // RFC 9112 §3.2: one Host only; Node's req.headers.host keeps the first one too.
      if (sawHost) continue
      sawHost = true
    }
    append(headers, name, raw[i + 1]!)
  }
  if (keepUpgrade && headers['upgrade'] !== undefined) headers['connection'] = 'upgrade'
  if (opts.cookie !== undefined && opts.cookie !== '') headers['cookie'] = opts.cookie
  headers['x-forwarded-for'] = opts.clientAddress
  headers['x-forwarded-proto'] = opts.proto
  headers['x-forwarded-host'] = opts.host
  headers['x-real-ip'] = opts.clientAddress
  for (const name in opts.identity) {
    headers[name.toLowerCase()] = opts.identity[name]!
  }
  return headers
}

/**
 * Whether the client sent more than one `Authorization` field. Node keeps the first for
 * `req.headers` (what Gatehouse checks) while the raw list, and so the upstream, would carry both: the
 * upstream could act on a credential no one verified (RFC 9110 §5.3: a field that is not a list must not
 * be repeated). The gateway refuses such a request before any other check.
 */
export function hasRepeatedAuthorization(req: IncomingMessage): boolean {
  const raw = req.rawHeaders
  let seen = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue
    if (seen) return true
    seen = true
  }
  return false
}

// Header bytes are latin1 on the wire; Node writes strings back as latin1, so this round-trips every byte.
function text(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1')
}

/** Options of {@link filterResponseHeaders}. */
export interface FilterResponseHeadersOptions {
  /** `[lower-case name, value]` pairs added only when the upstream did not send that header (security headers). */
  addIfAbsent?: ReadonlyArray<readonly [string, string]> | undefined
  /** `[name, value]` pairs always appended, after the upstream's (e.g. the gateway's `Set-Cookie`). */
  append?: ReadonlyArray<readonly [string, string]> | undefined
}

/**
 * Filters an upstream response's raw header list for the client: drops hop-by-hop headers and those named in
 * the response's `Connection` header, adds `addIfAbsent` headers the upstream did not set, and appends `append`.
 *
 * Takes and returns a flat `[name, value, name, value, …]` list (undici's raw headers, or
 * `IncomingMessage.rawHeaders`), which `ServerResponse.writeHead` accepts as is, keeping duplicates and order.
 *
 * @example
 * ```ts
 * res.writeHead(status, filterResponseHeaders(rawHeaders, {
 *   addIfAbsent: [['x-content-type-options', 'nosniff']],
 *   append: [['Set-Cookie', 'session=…; HttpOnly']],
 * }))
 * ```
 */
export function filterResponseHeaders(
  rawHeaders: ReadonlyArray<Buffer | string> | null | undefined,
  opts: FilterResponseHeadersOptions = {},
): string[] {
  const out: string[] = []
  const addIfAbsent = opts.addIfAbsent
  let present: Set<string> | undefined
  if (addIfAbsent !== undefined && addIfAbsent.length > 0) present = new Set()
  let nominated: Set<string> | undefined
  if (rawHeaders) {
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = text(rawHeaders[i]!)
      const lower = name.toLowerCase()
      if (HOP_BY_HOP.has(lower)) {
        if (lower === 'connection') {
          const tokens = connectionTokens(text(rawHeaders[i + 1]!))
          if (tokens !== undefined) {
            nominated ??= new Set()
            for (const token of tokens) nominated.add(token)
          }
        }
        continue
      }
      out.push(name, text(rawHeaders[i + 1]!))
      present?.add(lower)
    }
  }
  if (nominated !== undefined) {
    let w = 0
    for (let r = 0; r < out.length; r += 2) {
      const lower = out[r]!.toLowerCase()
      if (nominated.has(lower)) {
        present?.delete(lower)
        continue
      }
      out[w++] = out[r]!
      out[w++] = out[r + 1]!
    }
    out.length = w
  }
  if (addIfAbsent !== undefined && present !== undefined) {
    for (const [name, value] of addIfAbsent) {
      if (!present.has(name)) out.push(name, value)
    }
  }
  if (opts.append !== undefined) {
    for (const [name, value] of opts.append) out.push(name, value)
  }
  return out
}
