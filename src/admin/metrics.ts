import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

export interface Metrics {
  registry: Registry
  decisions: Counter<'decision' | 'code'>
  decisionSeconds: Histogram<'decision'>
  upstreamErrors: Counter<'kind'>
  heldResponses: Counter
  tokensCapped: Counter<'by'>
  expiryCliff: Gauge<'class'>
  expiryCliffShare: Gauge<'class'>
}

/** Prometheus metrics for one gateway, in their own registry (tests may start several gateways). */
export function createMetrics(): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' })
  return {
    registry,
    decisions: new Counter({
      name: 'gatehouse_requests_total',
      help: 'Requests by decision (allow, respond) and reason code',
      labelNames: ['decision', 'code'],
      registers: [registry],
    }),
    decisionSeconds: new Histogram({
      name: 'gatehouse_decision_seconds',
      help: 'Time spent deciding a request (check, refresh, callback), excluding the upstream',
      labelNames: ['decision'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5],
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'gatehouse_upstream_errors_total',
      help: 'Upstream failures by kind (connect, timeout, reset, other)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    heldResponses: new Counter({
      name: 'gatehouse_responses_held_total',
      help: 'Refusals answered late because the client kept presenting a credential already refused (rate_limits.repeat_penalty)',
      registers: [registry],
    }),
    tokensCapped: new Counter({
      name: 'gatehouse_tokens_capped_total',
      help: 'API tokens issued with a shorter lifetime than asked, by what capped them (class_max_ttl, parent)',
      labelNames: ['by'],
      registers: [registry],
    }),
    expiryCliff: new Gauge({
      name: 'gatehouse_expiry_cliff',
      help: '1 when more than the configured share of live credentials of a class expire within one window',
      labelNames: ['class'],
      registers: [registry],
    }),
    expiryCliffShare: new Gauge({
      name: 'gatehouse_expiry_cliff_share',
      help: 'Largest share (0-1) of live credentials of a class expiring within one window',
      labelNames: ['class'],
      registers: [registry],
    }),
  }
}
