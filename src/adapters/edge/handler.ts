/**
 * The Lambda@Edge adapter for seed 004's check_auth, parse_auth, refresh_auth and sign_out: each is a
 * viewer-request trigger that turns the CloudFront event into request facts, asks the core, and
 * returns either `cf.request` (allow: identity headers set, Gatehouse's cookies and any client-sent
 * identity or forwarding headers removed) or a generated response (redirect, page, 401…). Config, secrets and the
 * provider's last known good keys come baked in (see `gatehouse build-edge`). No Node API is used.
 */

import { type Assembled, assembleCore } from '../../assemble.ts'
import { type Clock, systemClock } from '../../core/clock.ts'
import type { Decision, RequestFacts } from '../../core/decisions.ts'
import type { Logger } from '../../core/ports.ts'
import { normalizePath } from '../../core/route-policy.ts'
import { isGatewayOwned, upstreamHeaderName } from '../header-rules.ts'
import {
  type CoreBundle,
  type CoreFunctionName,
  createBakedCacheStore,
  createConsoleLogger,
} from './bundle.ts'
import {
  type CloudFrontHeaders,
  type CloudFrontRequest,
  type CloudFrontRequestEvent,
  type CloudFrontRequestResult,
  generatedResponse,
  headerKey,
  headerValue,
  recordOf,
} from './cloudfront.ts'
import { createEdgeFetch, type EdgeFetchOptions } from './edge-fetch.ts'

export interface EdgeHandlerOptions {
  clock?: Clock
  /** Default: JSON lines on the console at the baked log level. */
  log?: Logger
  /** To reach the provider; default the global fetch. */
  fetch?: typeof fetch
  /** The provider-call budget (see createEdgeFetch). */
  budget?: EdgeFetchOptions
}

// The endpoint each function owns under the core's prefix; check-auth owns everything else.
const OWN_ENDPOINT: Readonly<Record<Exclude<CoreFunctionName, 'check-auth'>, string>> = {
  'parse-auth': 'callback',
  'refresh-auth': 'refresh',
  'sign-out': 'sign_out',
}

/** Headers a viewer-request function may not change (Lambda@Edge restrictions on edge functions). */
const READ_ONLY: ReadonlySet<string> = new Set(['host', 'content-length', 'transfer-encoding', 'via'])

/**
 * @example
 * // the entry build-edge generates for check-auth
 * export const handler = createEdgeHandler(bakedCheckAuthBundle)
 */
export function createEdgeHandler(
  bundle: CoreBundle,
  options: EdgeHandlerOptions = {},
): (event: CloudFrontRequestEvent) => Promise<CloudFrontRequestResult> {
  const fn = bundle.function
  if (!(fn === 'check-auth' || fn in OWN_ENDPOINT)) throw new TypeError(`bundle.function: unknown ${fn}`)
  if (fn !== 'check-auth' && bundle.secrets.clientSecret === undefined) {
    throw new TypeError(`bundle.secrets.clientSecret: ${fn} needs the client secret`)
  }
  const clock = options.clock ?? systemClock
  const log = options.log ?? createConsoleLogger(bundle.logLevel, { fn })
  const edgeFetch = createEdgeFetch(options.fetch ?? fetch, options.budget)
  let assembled: Promise<Assembled> | undefined

  function core(): Promise<Assembled> {
    assembled ??= assembleCore(bundle.config, {
      clock,
      log,
      // check-auth never calls the token endpoint (refreshes are redirected), so it holds no client
      // secret; the placeholder only satisfies the client's constructor, a provider would refuse it.
      secrets: {
        session: bundle.secrets.session,
        clientSecret: bundle.secrets.clientSecret ?? 'check-auth-holds-no-client-secret',
      },
      cacheStore: createBakedCacheStore(bundle.provider),
      fetch: edgeFetch.fetch,
      refreshMode: 'redirect',
    }).catch((err: unknown) => {
      assembled = undefined
      throw err
    })
    return assembled
  }

  return async function handler(event) {
    edgeFetch.startInvocation()
    const cf = recordOf(event)
    const request = cf.request
    let securityHeaders: Assembled['securityHeaders'] = []
    try {
      if (cf.config.eventType !== 'viewer-request') {
        log.error(
          { code: 'edge_misconfigured', eventType: cf.config.eventType },
          `${fn} must be a viewer-request trigger`,
        )
        return errorResponse(500, 'edge_misconfigured', securityHeaders)
      }
      const { gatehouse, securityHeaders: headerList } = await core()
      securityHeaders = headerList
      const url = request.querystring === '' ? request.uri : `${request.uri}?${request.querystring}`
      const target = normalizePath(url)
      if (target !== undefined && !ownsPath(fn, gatehouse.prefix, target.pathname)) {
        // A cache behaviour sends this path to the wrong function: say so instead of acting on it.
        log.error({ code: 'edge_misrouted', path: target.pathname }, `${fn} does not serve this path`)
        return errorResponse(404, 'not_found', securityHeaders)
      }
      if ((request.headers['authorization']?.length ?? 0) > 1) {
        // The origin could act on a credential no one checked (the Node proxy's rule, docs/security.md).
        log.info({ code: 'duplicate_authorization' }, 'request refused: more than one Authorization header')
        return errorResponse(400, 'duplicate_authorization', securityHeaders)
      }
      const facts: RequestFacts = {
        method: request.method,
        url,
        header: (name) => headerValue(request.headers, name),
        clientAddress: request.clientIp,
      }
      const decision = await gatehouse.handle(facts)
      return toCloudFront(decision, request, securityHeaders, log)
    } catch (err) {
      log.error({ code: 'internal_error', err: describe(err) }, 'edge function failed')
      return errorResponse(500, 'internal_error', securityHeaders)
    }
  }
}

function ownsPath(fn: CoreFunctionName, prefix: string, pathname: string): boolean {
  if (fn === 'check-auth') {
    return !Object.values(OWN_ENDPOINT).some((e) => pathname === `${prefix}/${e}`)
  }
  return pathname === `${prefix}/${OWN_ENDPOINT[fn]}`
}

function errorResponse(status: number, code: string, securityHeaders: Assembled['securityHeaders']) {
  const headers: Record<string, string> = Object.fromEntries(securityHeaders)
  headers['content-type'] = 'application/json; charset=utf-8'
  headers['cache-control'] = 'no-store'
  return generatedResponse(status, headers, [], JSON.stringify({ error: code }))
}

function toCloudFront(
  decision: Decision,
  request: CloudFrontRequest,
  securityHeaders: Assembled['securityHeaders'],
  log: Logger,
): CloudFrontRequestResult {
  if (decision.kind === 'respond') {
    // A response generated by a viewer-request trigger skips the origin-response trigger, so the
    // security headers http-headers would add are added here.
    const headers: Record<string, string> = { ...decision.headers }
    for (const [name, value] of securityHeaders) headers[name] ??= value
    const body = request.method === 'HEAD' ? '' : decision.body
    return generatedResponse(decision.status, headers, decision.setCookies, body)
  }
  if (decision.setCookies.length > 0) {
    // Redirect mode never refreshes inside check-auth, so there is nothing to set on an allowed request.
    log.warn(
      { code: 'cookies_dropped', count: decision.setCookies.length },
      'allowed request had cookies to set',
    )
  }
  const headers: CloudFrontHeaders = {}
  for (const [name, entries] of Object.entries(request.headers)) {
    // Identity and forwarding headers come from Gatehouse only, the same rule as every adapter's: the
    // client's x-auth-request-*, x-gatehouse-*, x-forwarded-*, forwarded and x-real-ip are dropped. A
    // viewer-request event holds only what the viewer sent; CloudFront adds its own X-Forwarded-For
    // (the viewer's address) to the origin request after this trigger, so none here is CloudFront's.
    // The headers of identity.headers_from_claims likewise (dropFromClient).
    // Gatehouse's cookies never reach the origin (the cookie header is rebuilt below).
    if (name === 'cookie' || isGatewayOwned(name) || decision.dropFromClient?.has(upstreamHeaderName(name)))
      continue
    headers[name] = entries
  }
  if (decision.upstreamCookie !== undefined)
    headers['cookie'] = [{ key: 'Cookie', value: decision.upstreamCookie }]
  for (const [name, value] of Object.entries(decision.upstreamHeaders)) {
    if (!READ_ONLY.has(name)) headers[name] = [{ key: headerKey(name), value }]
  }
  // The origin sees the normalised path the policy was checked against.
  const q = decision.path.indexOf('?')
  request.uri = q === -1 ? decision.path : decision.path.slice(0, q)
  request.querystring = q === -1 ? '' : decision.path.slice(q + 1)
  request.headers = headers
  return request
}

/** An error's class and message for the log; the core and the OIDC client never put a token in one. */
function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}
