import { createServer, type Server } from 'node:http'
import { createHostCheck } from '../adapters/node-proxy/allowed-hosts.ts'
import {
  createRefusalLog,
  DEFAULT_SERVER_LIMITS,
  httpServerOptions,
  limitConnections,
  type ServerLimits,
} from '../adapters/node-proxy/server-limits.ts'
import { type Logger, silentLogger } from '../core/ports.ts'
import type { Metrics } from './metrics.ts'
import { STATUS_PAGE_CSP } from './status-page.ts'

export interface AdminOptions {
  metrics: Metrics
  /** Readiness with a short description of each dependency. */
  ready: () => Promise<{ ready: boolean; checks: Record<string, string> }>
  /** What `/status.json` shows: provider state, cache ages, breaker, keys. Never a secret. */
  status?: () => Promise<Record<string, unknown>>
  /** What `/status` shows: an HTML page, served with a CSP that lets nothing run (`status-page.ts`). */
  statusPage?: () => Promise<string>
  /** Header timeout, connection caps (config `server`); its requests carry no body, so the whole request gets the header timeout. */
  limits?: ServerLimits | undefined
  /**
   * Host names answered (`.example.com`: a domain and every name under it), e.g. the name Prometheus
   * scrapes; IP literals and `localhost` always are. Any other `Host` gets 421 `misdirected_request` and
   * nothing else: a hostile page cannot read this port through a name rebound to it (DNS rebinding).
   */
  allowedHosts?: readonly string[] | undefined
  log?: Logger | undefined
}

const MISDIRECTED =
  '{"error":"misdirected_request","error_description":"This server does not answer for that host name."}\n'

/**
 * The admin port: `/healthz` (the process answers), `/readyz` (it can serve), `/metrics` (Prometheus),
 * `/status.json` (what Gatehouse knows of its dependencies), `/status` (the same and the expiry timeline, as a page).
 */
export function createAdminServer(options: AdminOptions): Server {
  const limits = options.limits ?? DEFAULT_SERVER_LIMITS
  const log = options.log ?? silentLogger
  const isAllowedHost = createHostCheck(options.allowedHosts ?? [])
  const server = createServer(
    httpServerOptions({ ...limits, requestTimeoutMs: limits.headersTimeoutMs }),
    async (req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
        res.writeHead(status, {
          'content-type': type,
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
          ...extra,
        })
        res.end(req.method === 'HEAD' ? undefined : body)
      }
      if (!isAllowedHost(req.headers.host)) {
        log.info(
          { code: 'misdirected_request', host: req.headers.host?.slice(0, 100) },
          'admin request refused: not a host the admin port answers for (admin.allowed_hosts)',
        )
        return send(421, 'application/json', MISDIRECTED)
      }
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return send(405, 'text/plain', 'method not allowed\n')
      try {
        if (path === '/healthz') return send(200, 'application/json', '{"status":"ok"}\n')
        if (path === '/readyz') {
          const r = await options.ready()
          return send(
            r.ready ? 200 : 503,
            'application/json',
            JSON.stringify({ status: r.ready ? 'ready' : 'not_ready', checks: r.checks }) + '\n',
          )
        }
        if (path === '/status.json' && options.status !== undefined) {
          return send(200, 'application/json', `${JSON.stringify(await options.status(), null, 2)}\n`)
        }
        if (path === '/status' && options.statusPage !== undefined) {
          return send(200, 'text/html; charset=utf-8', await options.statusPage(), {
            'content-security-policy': STATUS_PAGE_CSP,
            'x-frame-options': 'DENY',
            'referrer-policy': 'no-referrer',
          })
        }
        if (path === '/metrics')
          return send(200, options.metrics.registry.contentType, await options.metrics.registry.metrics())
        return send(404, 'text/plain', 'not found\n')
      } catch {
        return send(500, 'text/plain', 'internal error\n')
      }
    },
  )
  limitConnections(server, limits, createRefusalLog(log))
  return server
}
