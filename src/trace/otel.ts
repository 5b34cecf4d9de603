/**
 * OpenTelemetry traces, exported by OTLP/HTTP (JSON). Loaded with a dynamic import only when
 * `telemetry.traces` is configured: with tracing off, none of the SDK is in the process.
 *
 * Spans: `gatehouse.request` (server, the whole request), `gatehouse.check` (the decision),
 * `gatehouse.upstream` (client, the upstream exchange) and `gatehouse.provider.<call>` (client, each call
 * that reaches the identity provider). Attributes never carry a header value, a token, a cookie or a query
 * string: paths only, without the query (`/oauth2/callback?code=…` is recorded as `/oauth2/callback`).
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import {
  type Attributes,
  type Context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from '@opentelemetry/api'
import { ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
} from '@opentelemetry/semantic-conventions'
import type { Decision, RequestFacts } from '../core/decisions.ts'
import type { Gatehouse } from '../core/gatehouse.ts'
import type { Logger } from '../core/ports.ts'
import { normalizePath } from '../core/route-policy.ts'
import type { RequestTrace, Tracing, UpstreamSpan } from './tracing.ts'

/** Options of {@link createTracing} (config `telemetry.traces`). */
export interface TracingOptions {
  /**
   * Where spans are sent (OTLP/HTTP, JSON). A URL without a path gets `/v1/traces`. Undefined: the standard
   * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` environment variables, else
   * `http://localhost:4318/v1/traces`.
   */
  endpoint?: string | undefined
  /** Share of new traces recorded, 0 to 1. */
  sampleRatio: number
  /** The `service.name` resource attribute. */
  serviceName: string
  /** The `service.version` resource attribute: Gatehouse's version. Absent: not sent. */
  serviceVersion?: string | undefined
  /**
   * Continue a client's `traceparent` (and follow its sampled flag). When false, every request starts a new
   * trace, sampled by `sampleRatio` alone, with a link to the client's span context.
   */
  trustIncoming: boolean
  /** Record the client's address (`client.address`) on the request span. */
  recordClientAddress: boolean
  /** The gateway's public URL: `url.scheme` and `server.address` of the request span. */
  publicUrl: URL
  log: Logger
}

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the upstream and the provider get our span.
const propagator = new W3CTraceContextPropagator()

const fromIncoming: TextMapGetter<IncomingHttpHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
}
const intoRecord: TextMapSetter<Record<string, string | string[]>> = {
  set: (carrier, key, value) => {
    carrier[key] = value
  },
}
const intoHeaders: TextMapSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
}

function failed(span: Span, errorType: string): void {
  span.setAttribute(ATTR_ERROR_TYPE, errorType)
  span.setStatus({ code: SpanStatusCode.ERROR })
}

function errorType(err: unknown): string {
  const code = (err as { code?: unknown })?.code
  if (typeof code === 'string') return code
  return err instanceof Error ? err.name : 'Error'
}

function portOf(url: URL): number {
  return url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80
}

/** The path of a request target, without its query: never recorded, it may carry secrets. */
function pathOnly(target: string): string {
  const q = target.indexOf('?')
  return q === -1 ? target : target.slice(0, q)
}

/**
 * Which provider call a request is, from what oauth4webapi and the provider cache send: token requests
 * carry a `grant_type`, revocations a `token`, discovery its well-known path; the only other call
 * Gatehouse makes is the JWKS fetch.
 */
export function providerCall(url: URL, init: RequestInit | undefined): string {
  const body = init?.body
  if (body instanceof URLSearchParams) {
    const grant = body.get('grant_type')
    if (grant === 'authorization_code') return 'token_exchange'
    if (grant === 'refresh_token') return 'refresh'
    if (grant !== null) return 'token'
    return body.has('token') ? 'revoke' : 'other'
  }
  if (url.pathname.includes('/.well-known/')) return 'discovery'
  return (init?.method ?? 'GET') === 'GET' ? 'jwks' : 'other'
}

/** The OTLP endpoint as the exporter wants it: the full traces URL. */
export function tracesURL(endpoint: string): string {
  const url = new URL(endpoint)
  if (url.pathname === '/') url.pathname = '/v1/traces'
  return url.href
}

/**
 * Sets up the tracer provider: parent-based sampling with `sampleRatio` for new traces, a bounded batch
 * queue (2048 spans; more are dropped, never waited for) and the OTLP/HTTP exporter. Nothing is registered
 * globally: several gateways in one process (tests) keep their own.
 */
export function createTracing(options: TracingOptions): Tracing {
  const { log } = options
  const inner = new OTLPTraceExporter(
    options.endpoint === undefined ? {} : { url: tracesURL(options.endpoint) },
  )
  let lastFailureLogged = 0
  // A collector that is down must not flood the log: one line a minute at most.
  const exporter: SpanExporter = {
    export(spans, done) {
      inner.export(spans, (result) => {
        if (result.code !== ExportResultCode.SUCCESS && Date.now() - lastFailureLogged > 60_000) {
          lastFailureLogged = Date.now()
          log.warn({ err: result.error?.message, spans: spans.length }, 'trace export failed')
        }
        done(result)
      })
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush(),
  }
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: options.serviceName,
      ...(options.serviceVersion === undefined ? {} : { [ATTR_SERVICE_VERSION]: options.serviceVersion }),
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.sampleRatio) }),
    spanLimits: { attributeValueLengthLimit: 1024 },
    spanProcessors: [new BatchSpanProcessor({ exporter })],
  })
  const tracer = provider.getTracer('gatehouse')
  // The span a provider call belongs to: set while a decision runs, read by the provider fetch.
  const current = new AsyncLocalStorage<Context>()
  const scheme = options.publicUrl.protocol === 'https:' ? 'https' : 'http'
  const publicHost = options.publicUrl.hostname
  const publicPort = portOf(options.publicUrl)

  function parentOf(req: IncomingMessage): { parent: Context; links: Link[] | undefined } {
    if (req.headers.traceparent === undefined) return { parent: ROOT_CONTEXT, links: undefined }
    const remote = propagator.extract(ROOT_CONTEXT, req.headers, fromIncoming)
    if (options.trustIncoming) return { parent: remote, links: undefined }
    // A client cannot choose our trace id or sampling; its context is kept as a link only.
    const context = trace.getSpanContext(remote)
    return { parent: ROOT_CONTEXT, links: context === undefined ? undefined : [{ context }] }
  }

  function request(req: IncomingMessage, res: ServerResponse): RequestTrace {
    const method = req.method ?? 'GET'
    const target = normalizePath(req.url ?? '/')
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: method,
      [ATTR_URL_SCHEME]: scheme,
      [ATTR_SERVER_ADDRESS]: publicHost,
      [ATTR_SERVER_PORT]: publicPort,
    }
    if (target !== undefined) attributes[ATTR_URL_PATH] = target.pathname
    if (options.recordClientAddress) attributes[ATTR_CLIENT_ADDRESS] = req.socket.remoteAddress ?? ''
    const { parent, links } = parentOf(req)
    const span = tracer.startSpan('gatehouse.request', { kind: SpanKind.SERVER, attributes, links }, parent)
    const context = trace.setSpan(ROOT_CONTEXT, span)
    let upstreamSpan: UpstreamSpan | undefined
    res.once('close', () => {
      // An exchange still open when the client leaves ends with the request.
      upstreamSpan?.end(new Error('client closed the connection'))
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, res.statusCode)
      if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
      else if (!res.writableFinished) failed(span, 'aborted')
      span.end()
    })

    return {
      async check(gatehouse: Pick<Gatehouse, 'handle' | 'route'>, facts: RequestFacts): Promise<Decision> {
        const checkAttributes: Attributes = { [ATTR_HTTP_REQUEST_METHOD]: method }
        if (target !== undefined) checkAttributes[ATTR_URL_PATH] = target.pathname
        const check = tracer.startSpan('gatehouse.check', { attributes: checkAttributes }, context)
        try {
          const decision = await current.run(trace.setSpan(context, check), () => gatehouse.handle(facts))
          check.setAttribute('gatehouse.decision', decision.kind)
          if (target !== undefined && check.isRecording()) {
            const rule = gatehouse.route(method, target.pathname)
            if (rule !== undefined) check.setAttribute('gatehouse.route.rule', rule)
          }
          if (decision.kind === 'respond') {
            check.setAttribute('gatehouse.code', decision.code)
            check.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, decision.status)
          } else {
            check.setAttribute('gatehouse.code', 'allow')
          }
          return decision
        } catch (err) {
          failed(check, errorType(err))
          throw err
        } finally {
          check.end()
        }
      },

      upstream(url, upstreamMethod, path, headers) {
        const exchange = tracer.startSpan(
          'gatehouse.upstream',
          {
            kind: SpanKind.CLIENT,
            attributes: {
              [ATTR_HTTP_REQUEST_METHOD]: upstreamMethod,
              [ATTR_SERVER_ADDRESS]: url.hostname,
              [ATTR_SERVER_PORT]: portOf(url),
              // The upstream URL's own path (`/app`) comes first, as createUpstream sends it.
              [ATTR_URL_PATH]: url.pathname.replace(/\/+$/, '') + pathOnly(path),
            },
          },
          context,
        )
        delete headers['traceparent']
        delete headers['tracestate']
        propagator.inject(trace.setSpan(ROOT_CONTEXT, exchange), headers, intoRecord)
        let ended = false
        upstreamSpan = {
          status(statusCode) {
            exchange.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode)
            if (statusCode >= 500) exchange.setStatus({ code: SpanStatusCode.ERROR })
          },
          end(err) {
            if (ended) return
            ended = true
            if (err !== undefined) failed(exchange, errorType(err))
            exchange.end()
          },
        }
        return upstreamSpan
      },
    }
  }

  function tracedFetch(innerFetch: typeof fetch): typeof fetch {
    return (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
      const call = providerCall(url, init)
      const span = tracer.startSpan(
        `gatehouse.provider.${call}`,
        {
          kind: SpanKind.CLIENT,
          attributes: {
            'gatehouse.provider.call': call,
            [ATTR_HTTP_REQUEST_METHOD]: init?.method ?? 'GET',
            [ATTR_SERVER_ADDRESS]: url.hostname,
            [ATTR_SERVER_PORT]: portOf(url),
            [ATTR_URL_FULL]: url.origin + url.pathname,
          },
        },
        // Background refreshes (no request) start traces of their own.
        current.getStore() ?? ROOT_CONTEXT,
      )
      const headers = new Headers(init?.headers)
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, intoHeaders)
      try {
        const response = await innerFetch(input, { ...init, headers })
        span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, response.status)
        if (response.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
        return response
      } catch (err) {
        failed(span, errorType(err))
        throw err
      } finally {
        span.end()
      }
    }) as typeof fetch
  }

  return {
    request,
    fetch: tracedFetch,
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  }
}
