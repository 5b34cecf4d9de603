/**
 * What the Node adapter asks of tracing. Types only: the gateway server depends on these, never on the
 * OpenTelemetry SDK, which src/trace/otel.ts loads only when `telemetry.traces` is configured.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Decision, RequestFacts } from '../core/decisions.ts'
import type { Gatehouse } from '../core/gatehouse.ts'

/** One exchange with the upstream, as its span sees it. Calls after the first `end` are ignored. */
export interface UpstreamSpan {
  /** The upstream's response headers arrived with this status. */
  status(statusCode: number): void
  /** The exchange is over: the response was relayed, or it failed with `err`. */
  end(err?: Error): void
}

/** One request's spans: `gatehouse.request` (server), `gatehouse.check`, `gatehouse.upstream`. */
export interface RequestTrace {
  /**
   * Asks `gatehouse` for the decision inside the `gatehouse.check` span, with the decision's kind and
   * code and the route rule as attributes; provider calls made meanwhile are its children.
   */
  check(gatehouse: Pick<Gatehouse, 'handle' | 'route'>, facts: RequestFacts): Promise<Decision>
  /**
   * Starts the `gatehouse.upstream` span and sets `traceparent` (and `tracestate`, when there is one) on
   * the upstream request's headers to it, replacing the client's.
   */
  upstream(
    target: URL,
    method: string,
    path: string,
    headers: Record<string, string | string[]>,
  ): UpstreamSpan
}

/** Tracing once set up (src/trace/otel.ts). The gateway holds `undefined` when it is off. */
export interface Tracing {
  /** Starts the request's server span; it ends when the response closes. */
  request(req: IncomingMessage, res: ServerResponse): RequestTrace
  /** Wraps the fetch all provider calls go through: one client span and one `traceparent` per call. */
  fetch(inner: typeof fetch): typeof fetch
  /** Exports every ended span now (tests, and before a shutdown). */
  flush(): Promise<void>
  /** Exports what is left, then stops exporting. */
  shutdown(): Promise<void>
}
