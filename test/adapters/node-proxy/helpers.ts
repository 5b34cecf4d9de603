import { once } from 'node:events'
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { buildUpstreamHeaders } from '../../../src/adapters/node-proxy/forward-headers.ts'
import {
  type CreateUpstreamOptions,
  createUpstream,
  type ForwardOptions,
  type UpstreamErrorKind,
} from '../../../src/adapters/node-proxy/upstream.ts'

export interface Listening {
  server: Server
  url: string
  port: number
  close(): Promise<void>
}

export async function listen(server: Server): Promise<Listening> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** A port on which nothing listens (bound, then released). */
export async function closedPort(): Promise<number> {
  const probe = await listen(createServer())
  await probe.close()
  return probe.port
}

export interface Seen {
  method: string
  url: string
  headers: IncomingHttpHeaders
  rawHeaders: string[]
}

export function seen(req: IncomingMessage): Seen {
  return { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders }
}

export interface GatewayOptions {
  upstream?: Omit<CreateUpstreamOptions, 'url'>
  identity?: Record<string, string>
  cookie?: string
  responseHeaders?: ForwardOptions['responseHeaders']
  /** Replaces the default 'upgrade' listener, e.g. to refuse it. */
  onUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
}

export interface Gateway extends Listening {
  errors: Array<{ kind: UpstreamErrorKind; message: string }>
}

/** A minimal gateway around createUpstream + buildUpstreamHeaders, as the server glue will use them. */
export async function startGateway(upstreamURL: string, options: GatewayOptions = {}): Promise<Gateway> {
  const upstream = createUpstream({ url: upstreamURL, ...options.upstream })
  const errors: Gateway['errors'] = []
  const onError = (kind: UpstreamErrorKind, err: Error) => {
    errors.push({ kind, message: err.message })
  }
  const facts = (req: IncomingMessage, upgrade: boolean) =>
    buildUpstreamHeaders(req, {
      identity: options.identity ?? { 'X-Auth-Request-User': 'alice' },
      clientAddress: req.socket.remoteAddress ?? '',
      proto: 'http',
      host: req.headers.host ?? '',
      cookie: options.cookie,
      upgrade,
    })
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    upstream.forward(req, res, {
      path: req.url ?? '/',
      headers: facts(req, false),
      responseHeaders: options.responseHeaders,
      onError,
    })
  })
  server.on(
    'upgrade',
    options.onUpgrade ??
      ((req: IncomingMessage, socket: Duplex, head: Buffer) => {
        upstream.upgrade(req, socket, head, { path: req.url ?? '/', headers: facts(req, true), onError })
      }),
  )
  const listening = await listen(server)
  return {
    ...listening,
    errors,
    async close() {
      await listening.close()
      await upstream.close()
    },
  }
}

export interface Reply {
  status: number
  headers: IncomingHttpHeaders
  rawHeaders: string[]
  body: Buffer
}

/** One request on a fresh connection; `body` may be a Buffer or an async iterable of chunks. */
export async function send(
  url: string,
  options: {
    method?: string
    headers?: Record<string, string | string[]>
    body?: Buffer | AsyncIterable<Buffer>
  } = {},
): Promise<Reply> {
  const req = request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false })
  const replied = once(req, 'response') as Promise<[IncomingMessage]>
  const body = options.body
  if (body === undefined) req.end()
  else if (Buffer.isBuffer(body)) req.end(body)
  else {
    for await (const chunk of body) {
      if (!req.write(chunk)) await once(req, 'drain')
    }
    req.end()
  }
  const [res] = await replied
  const chunks: Buffer[] = []
  for await (const chunk of res) chunks.push(chunk as Buffer)
  return {
    status: res.statusCode ?? 0,
    headers: res.headers,
    rawHeaders: res.rawHeaders,
    body: Buffer.concat(chunks),
  }
}
