/**
 * The Web fetch adapter: `createFetchHandler(config)` returns `(Request) => Promise<Response>` for
 * Cloudflare Workers, Deno, Bun, or anything else that speaks Web `Request`/`Response`. Same core as
 * the Node proxy; only the translation differs. No Node API is used here or below.
 */

import { assembleCore } from '../../assemble.ts'
import { ConfigError } from '../../config/errors.ts'
import { providerList } from '../../config/providers.ts'
import type { Config } from '../../config/schema.ts'
import { type Clock, systemClock } from '../../core/clock.ts'
import type { RequestFacts } from '../../core/decisions.ts'
import { type Logger, silentLogger } from '../../core/ports.ts'
import { createMemoryStore } from '../../store/memory-store.ts'
import { HOP_BY_HOP, isGatewayOwned, isHopByHop, upstreamHeaderName } from '../header-rules.ts'

export interface FetchHandlerOptions {
  /** Where `{ env: NAME }` secrets are read (Workers: the `env` binding; Deno: `Deno.env.toObject()`). `{ file }` secrets are not supported here. */
  env: Record<string, string | undefined>
  clock?: Clock
  log?: Logger
  /** To reach the provider and the upstream; default the global fetch. */
  fetch?: typeof fetch
  /** Header carrying the client address (Workers: `cf-connecting-ip`). */
  clientAddressHeader?: string
}

// Besides hop-by-hop fields: fetch sets Host itself. Forwarding fields come from Gatehouse only (isGatewayOwned).
const NOT_FORWARDED: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'host'])

/** Answers held at once for clients repeating a refused credential; past this, answered at once. */
const MAX_HELD = 10_000

function secret(
  ref: { env: string } | { file: string },
  path: string,
  env: FetchHandlerOptions['env'],
): string {
  if ('file' in ref) {
    throw new ConfigError('config', [
      { path, message: 'expected { env: NAME } (the fetch adapter has no file system), got { file }' },
    ])
  }
  const v = env[ref.env]
  if (v === undefined || v === '') {
    throw new ConfigError('config', [{ path, message: `expected ${ref.env} to be set, got nothing` }])
  }
  return v
}

/**
 * @example
 * // Cloudflare Worker
 * let handle
 * export default { async fetch(request, env) { handle ??= await createFetchHandler(config, { env }); return handle(request) } }
 */
export async function createFetchHandler(
  config: Config,
  options: FetchHandlerOptions,
): Promise<(request: Request) => Promise<Response>> {
  const clock = options.clock ?? systemClock
  const log = options.log ?? silentLogger
  for (const { path, config: p } of providerList(config)) {
    if (p.ca === undefined) continue
    // The runtime's fetch uses its own trust store; give the runtime the CA instead (e.g. Deno's --cert).
    throw new ConfigError('config', [
      {
        path: `${path}.ca`,
        message: "is not supported by the fetch handler (the runtime's own trust applies)",
      },
    ])
  }
  if (config.upstream === undefined) {
    throw new ConfigError('config', [
      { path: 'apps', message: 'is served by the Node gateway only: the fetch handler takes one upstream' },
    ])
  }
  const fetchImpl = options.fetch ?? fetch
  let held = 0
  const upstream = new URL(config.upstream)
  const upstreamBase = upstream.pathname.replace(/\/$/, '')
  const addressHeader = options.clientAddressHeader ?? 'cf-connecting-ip'
  // An isolate keeps the provider's copies in memory; nothing is persisted at the edge.
  const { gatehouse, securityHeaders } = await assembleCore(config, {
    clock,
    log,
    secrets: {
      session: config.session.secrets.map((ref, i) => secret(ref, `session.secrets[${i}]`, options.env)),
      // Each provider's (a lone `provider` is the only one): with a providers list, every entry's.
      providers: providerList(config).map(({ path, config: p }) => ({
        clientSecret: p.client_secret && secret(p.client_secret, `${path}.client_secret`, options.env),
        clientKey:
          p.client_key &&
          secret(
            'env' in p.client_key ? { env: p.client_key.env } : { file: p.client_key.file },
            `${path}.client_key`,
            options.env,
          ),
      })),
    },
    cacheStore: createMemoryStore({ clock }),
    fetch: fetchImpl,
    repeatPenalty:
      config.rate_limits.repeat_penalty === false
        ? undefined
        : {
            after: config.rate_limits.repeat_penalty.after,
            maxDelayMs: config.rate_limits.repeat_penalty.max_delay_ms,
          },
  })

  function withSecurityHeaders(headers: Headers, setCookies: readonly string[]): Headers {
    for (const [name, value] of securityHeaders) if (!headers.has(name)) headers.set(name, value)
    for (const c of setCookies) headers.append('set-cookie', c)
    return headers
  }

  return async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url)
    const clientAddress = request.headers.get(addressHeader) ?? ''
    const facts: RequestFacts = {
      method: request.method,
      url: url.pathname + url.search,
      header: (name) => request.headers.get(name) ?? undefined,
      clientAddress,
      form: (maxBytes) => readForm(request, maxBytes),
    }
    const decision = await gatehouse.handle(facts)
    if (decision.kind === 'respond') {
      // A client repeating a refused credential waits (a timer: on Workers, wall time, not CPU time).
      // At most MAX_HELD at once, and a client that goes away stops its timer.
      if (decision.delayMs !== undefined && decision.delayMs > 0 && held < MAX_HELD) {
        held++
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer)
            request.signal.removeEventListener('abort', done)
            resolve()
          }
          const timer = setTimeout(done, decision.delayMs)
          request.signal.addEventListener('abort', done, { once: true })
        })
        held--
      }
      const headers = withSecurityHeaders(new Headers(decision.headers), decision.setCookies)
      const nullBody = decision.body === '' || request.method === 'HEAD'
      return new Response(nullBody ? null : decision.body, { status: decision.status, headers })
    }
    const out = new Headers()
    const connectionTokens = (request.headers.get('connection') ?? '')
      .toLowerCase()
      .split(',')
      .map((t) => t.trim())
    request.headers.forEach((value, name) => {
      if (
        NOT_FORWARDED.has(name) ||
        isGatewayOwned(name) ||
        isHopByHop(name) ||
        decision.dropFromClient?.has(upstreamHeaderName(name)) ||
        connectionTokens.includes(name) ||
        name === 'cookie'
      )
        return
      out.set(name, value)
    })
    if (decision.upstreamCookie !== undefined) out.set('cookie', decision.upstreamCookie)
    if (clientAddress !== '') {
      out.set('x-forwarded-for', clientAddress)
      out.set('x-real-ip', clientAddress)
    }
    out.set('x-forwarded-proto', url.protocol.replace(':', ''))
    out.set('x-forwarded-host', url.host)
    for (const [name, value] of Object.entries(decision.upstreamHeaders)) out.set(name, value)
    const target = new URL(upstreamBase + decision.path, upstream)
    let response: Response
    try {
      const hasBody = request.method !== 'GET' && request.method !== 'HEAD'
      response = await fetchImpl(target, {
        method: request.method,
        headers: out,
        body: hasBody ? request.body : null,
        redirect: 'manual',
        signal: AbortSignal.timeout(config.upstream_timeouts.headers * 1000),
        ...(hasBody ? { duplex: 'half' } : {}),
      } as RequestInit)
    } catch (err) {
      const timeout = (err as Error).name === 'TimeoutError'
      log.warn({ kind: timeout ? 'timeout' : 'connect', err: (err as Error).message }, 'upstream error')
      const status = timeout ? 504 : 502
      const body = JSON.stringify({ error: timeout ? 'gateway_timeout' : 'bad_gateway' })
      return new Response(body, {
        status,
        headers: withSecurityHeaders(
          new Headers({ 'content-type': 'application/json', 'cache-control': 'no-store' }),
          [],
        ),
      })
    }
    const headers = new Headers(response.headers)
    for (const name of HOP_BY_HOP) headers.delete(name)
    return new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: withSecurityHeaders(headers, decision.setCookies),
    })
  }
}

/** The body as a form, read no further than `maxBytes` whatever Content-Length says (see RequestFacts.form). */
async function readForm(
  request: Request,
  maxBytes: number,
): Promise<URLSearchParams | 'too_large' | 'unsupported_media_type'> {
  const type = (request.headers.get('content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') return 'unsupported_media_type'
  if (request.body === null) return new URLSearchParams()
  const reader = request.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel()
      return 'too_large'
    }
    chunks.push(value)
  }
  const all = new Uint8Array(size)
  let at = 0
  for (const c of chunks) {
    all.set(c, at)
    at += c.byteLength
  }
  return new URLSearchParams(new TextDecoder().decode(all))
}
