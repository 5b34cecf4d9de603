/**
 * Benchmark baseline: a reverse proxy with no authentication at all, forwarding exactly as Gatehouse does
 * (`buildUpstreamHeaders` + `createUpstream().forward`, undici `Pool.dispatch`), so the difference between the two
 * is the cost of the checks.
 *
 * Usage: `node bench/bare-proxy.ts <upstream-url> [port]` (or UPSTREAM_URL=…, PORT=…);
 * prints `bare-proxy listening http://127.0.0.1:<port>`.
 */
import { createServer, type IncomingMessage } from 'node:http'
import { buildUpstreamHeaders } from '../src/adapters/node-proxy/forward-headers.ts'
import { createUpstream } from '../src/adapters/node-proxy/upstream.ts'
import { portFrom, serve } from './child.ts'

const upstreamURL = process.argv[2] ?? process.env['UPSTREAM_URL']
if (upstreamURL === undefined) {
  process.stderr.write('usage: node bench/bare-proxy.ts <upstream-url> [port]\n')
  process.exit(2)
}
const upstream = createUpstream({ url: upstreamURL })

function facts(req: IncomingMessage, upgrade: boolean) {
  return buildUpstreamHeaders(req, {
    identity: {},
    clientAddress: req.socket.remoteAddress ?? '',
    proto: 'http',
    host: req.headers.host ?? '',
    cookie: req.headers.cookie,
    upgrade,
  })
}

const server = createServer((req, res) => {
  upstream.forward(req, res, { path: req.url ?? '/', headers: facts(req, false) })
})
server.on('upgrade', (req, socket, head) => {
  upstream.upgrade(req, socket, head, { path: req.url ?? '/', headers: facts(req, true) })
})
server.keepAliveTimeout = 120_000

serve(server, 'bare-proxy', portFrom(process.argv[3] ?? process.env['PORT']))
