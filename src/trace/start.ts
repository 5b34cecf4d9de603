import { readFileSync } from 'node:fs'
import type { Config } from '../config/schema.ts'
import type { Logger } from '../core/ports.ts'
import type { Tracing } from './tracing.ts'

/**
 * Tracing as configured (`telemetry.traces`), or `undefined` when it is off. The OpenTelemetry SDK is
 * imported here, and only here, on demand: a gateway without tracing never loads it.
 */
export async function startTracing(
  traces: Config['telemetry']['traces'],
  publicUrl: URL,
  log: Logger,
): Promise<Tracing | undefined> {
  if (traces === undefined) return undefined
  const { createTracing } = await import('./otel.ts')
  const tracing = createTracing({
    endpoint: traces.otlp_endpoint,
    sampleRatio: traces.sample_ratio,
    serviceName: traces.service_name,
    serviceVersion: gatehouseVersion(),
    trustIncoming: traces.trust_incoming_trace,
    recordClientAddress: traces.record_client_address,
    publicUrl,
    log,
  })
  log.info(
    {
      endpoint: traces.otlp_endpoint ?? 'from OTEL_EXPORTER_OTLP_* or http://localhost:4318/v1/traces',
      sample_ratio: traces.sample_ratio,
      trust_incoming_trace: traces.trust_incoming_trace,
    },
    'tracing on',
  )
  return tracing
}

/** The `version` of Gatehouse's package.json (two levels up from src/trace and from dist/trace alike). */
function gatehouseVersion(): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      name?: unknown
      version?: unknown
    }
    return pkg.name === 'gatehouse' && typeof pkg.version === 'string' ? pkg.version : undefined
  } catch {
    return undefined
  }
}
