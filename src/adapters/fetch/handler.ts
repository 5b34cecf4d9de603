/**
 * The Web fetch adapter: `createFetchHandler(config)` returns `(Request) => Promise<Response>` for
 * Cloudflare Workers, Deno, Bun, or anything else that speaks Web `Request`/`Response`. Same core as
 * the Node proxy; only the translation differs. No Node API is used here or below.
 */

import type { Config } from '../../config/schema.ts'
import { ConfigError } from '../../config/validate.ts'
import { createBearerVerifier } from '../../core/bearer.ts'
import { type Clock, systemClock } from '../../core/clock.ts'
import type { RequestFacts } from '../../core/decisions.ts'
import { createGatehouse } from '../../core/gatehouse.ts'
import { createSecurityHeaders, defaultSecurityHeaders } from '../../core/http-headers.ts'
import { createMemoryOneTimeStore } from '../../core/one-time-store.ts'
import { type Logger, silentLogger } from '../../core/ports.ts'
import type { Access } from '../../core/route-policy.ts'
import { createSessionCodec } from '../../core/session-codec.ts'
import { createProviderCache } from '../../keys/provider-cache.ts'
import { createOIDCClient } from '../../oidc/client.ts'
import { createGuardedFetch } from '../../oidc/guarded-fetch.ts'
import { createMemoryStore } from '../../store/memory-store.ts'

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

// RFC 9110 §7.6.1 hop-by-hop fields; and headers that only Gatehouse may set.
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
  'host',
  'forwarded',
  'x-real-ip',
])
const isOwnHeader = (name: string) =>
  name.startsWith('x-auth-request-') || name.startsWith('x-gatehouse-') || name.startsWith('x-forwarded-')

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

function accessOf(allow: Config['routes'][number]['allow']): Access {
  if (allow === 'anonymous') return { kind: 'anonymous' }
  if (allow === 'authenticated') return { kind: 'authenticated' }
  return { kind: 'restricted', groups: allow.groups, emails: allow.emails }
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
  const fetchImpl = options.fetch ?? fetch
  const publicUrl = new URL(config.public_url)
  const secure = publicUrl.protocol === 'https:'
  const upstream = new URL(config.upstream)
  const upstreamBase = upstream.pathname.replace(/\/$/, '')
  const addressHeader = options.clientAddressHeader ?? 'cf-connecting-ip'
  const cognito = config.provider.preset === 'cognito'
  const mapping = {
    userClaim: config.identity.user_claim,
    groupsClaim: config.identity.groups_claim ?? (cognito ? 'cognito:groups' : 'groups'),
  }
  const codec = await createSessionCodec({
    secrets: config.session.secrets.map((ref, i) => secret(ref, `session.secrets[${i}]`, options.env)),
    cookieName: secure ? `__Host-${config.session.cookie_name}` : config.session.cookie_name,
    secure,
    clock,
  })
  const guard = createGuardedFetch(fetchImpl, {
    clock,
    maxInFlight: config.provider.breaker.max_in_flight,
    failureThreshold: config.provider.breaker.failures,
    openSeconds: config.provider.breaker.open_for,
  })
  // An isolate keeps its copies in memory; nothing is persisted at the edge.
  const cache = createProviderCache({
    issuer: config.provider.issuer,
    clock,
    log,
    store: createMemoryStore({ clock }),
    timeoutMs: config.provider.timeout * 1000,
    refreshAfterSeconds: config.provider.cache.refresh_after,
    staleIfErrorSeconds: config.provider.cache.stale_if_error,
    unknownKidCooldownSeconds: config.provider.cache.unknown_kid_cooldown,
    fetch: guard.fetch,
  })
  const oidc = createOIDCClient({
    issuer: config.provider.issuer,
    clientId: config.provider.client_id,
    clientSecret: secret(config.provider.client_secret, 'provider.client_secret', options.env),
    redirectUri: new URL('/oauth2/callback', publicUrl).href,
    scopes: config.provider.scopes,
    preset: config.provider.preset,
    endSessionUrl: config.provider.end_session_url,
    algorithms: config.provider.algorithms,
    timeoutMs: config.provider.timeout * 1000,
    clock,
    fetch: guard.fetch,
    cache,
  })
  const bearer = createBearerVerifier(
    {
      issuer: config.provider.issuer,
      audiences: config.provider.audiences ?? [config.provider.client_id],
      audienceClaim: cognito ? 'client_id' : 'aud',
      algorithms: config.provider.algorithms,
      leewaySeconds: config.provider.leeway,
      mapping,
      clock,
      requiredClaims: cognito ? { token_use: 'access' } : undefined,
    },
    cache.getKey,
  )
  const gatehouse = createGatehouse(
    {
      publicUrl: publicUrl.origin,
      routes: config.routes.map((r) => ({ path: r.path, methods: r.methods, access: accessOf(r.allow) })),
      session: {
        ttlSeconds: config.lifetimes.session.ttl,
        maxTtlSeconds: config.lifetimes.session.max_ttl,
        refreshBeforeSeconds: config.session.refresh_before,
        outageGraceSeconds: config.provider.outage_grace,
      },
      signInTtlSeconds: config.sign_in.ttl,
      mapping,
      passAccessToken: config.identity.pass_access_token,
      signOutRedirectPath: config.sign_out.redirect,
    },
    { clock, oidc, codec, oneTime: createMemoryOneTimeStore(clock), bearer, log },
  )
  const h = config.headers
  const securityHeaders = createSecurityHeaders(
    {
      hsts:
        h.hsts === false
          ? false
          : h.hsts === undefined
            ? defaultSecurityHeaders.hsts
            : {
                maxAgeSeconds: h.hsts.max_age,
                includeSubDomains: h.hsts.include_subdomains,
                preload: h.hsts.preload,
              },
      contentSecurityPolicy: h.content_security_policy ?? defaultSecurityHeaders.contentSecurityPolicy,
      frameOptions: h.frame_options ?? defaultSecurityHeaders.frameOptions,
      referrerPolicy: h.referrer_policy ?? defaultSecurityHeaders.referrerPolicy,
      contentTypeOptions: h.content_type_options ?? defaultSecurityHeaders.contentTypeOptions,
    },
    secure,
  )

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
    }
    const decision = await gatehouse.handle(facts)
    if (decision.kind === 'respond') {
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
      if (HOP_BY_HOP.has(name) || isOwnHeader(name) || connectionTokens.includes(name) || name === 'cookie')
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
    for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection'])
      headers.delete(name)
    return new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: withSecurityHeaders(headers, decision.setCookies),
    })
  }
}
