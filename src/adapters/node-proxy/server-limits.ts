import type { Server, ServerOptions } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from '../../core/ports.ts'

/** How long a client may take, and how many connections it may hold (config `server`). */
export interface ServerLimits {
  /** The request line and headers must arrive within this, in ms, or the client gets 408 and is closed. */
  headersTimeoutMs: number
  /**
   * The whole request, body included, must arrive within this, in ms; `0` turns it off (long uploads).
   * A response, however long it streams, and an upgraded connection are not bound by it.
   */
  requestTimeoutMs: number
  /** An idle keep-alive connection is closed after this, in ms. */
  keepAliveTimeoutMs: number
  /** Open connections at most; past it, new connections are closed as soon as they are accepted. */
  maxConnections: number
  /** Open connections from one client address (an IPv6 /64 counts as one) at most; `undefined`: no cap. */
  maxConnectionsPerClient?: number | undefined
}

/** Limits when none are configured: the config's defaults. */
export const DEFAULT_SERVER_LIMITS: Readonly<ServerLimits> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 0,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 10_000,
  maxConnectionsPerClient: 256,
})

/** `createServer` options for these limits (the TLS handshake counts as part of the headers' time). */
export function httpServerOptions(limits: ServerLimits): ServerOptions & { handshakeTimeout: number } {
  const { headersTimeoutMs, requestTimeoutMs } = limits
  if (!(headersTimeoutMs > 0) || !(requestTimeoutMs >= 0) || !(limits.keepAliveTimeoutMs >= 0)) {
    throw new TypeError('server limits: timeouts must be >= 0 ms, and headersTimeoutMs > 0')
  }
  if (requestTimeoutMs > 0 && requestTimeoutMs < headersTimeoutMs) {
    throw new TypeError('server limits: requestTimeoutMs must be 0 or at least headersTimeoutMs')
  }
  return {
    headersTimeout: headersTimeoutMs,
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node looks for expired requests only this often (30 s by default, which would let a 10 s header
    // timeout run to 40 s): a quarter of the timeout, between 50 ms and 1 s.
    connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(headersTimeoutMs / 4))),
    handshakeTimeout: headersTimeoutMs,
  }
}

/**
 * The key connections are counted under: the address itself, or for IPv6 its /64 (one subscriber's
 * network, which an attacker gets whole). IPv4-mapped IPv6 addresses count as the IPv4 address.
 */
export function clientKey(address: string): string {
  if (!address.includes(':')) return address
  const lower = address.toLowerCase().split('%')[0]!
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7)
  const [head = '', tail] = lower.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups =
    tail === undefined
      ? left
      : [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`
}

export type ConnectionRefusal = 'max_connections' | 'max_connections_per_client'

/**
 * Caps the connections `server` holds: past `maxConnections` Node closes new ones before any parsing
 * (`server.maxConnections`); past `maxConnectionsPerClient` for one client key, this closes them as soon
 * as they are accepted, before they cost a request. `onRefused` hears of each one.
 */
export function limitConnections(
  server: Server,
  limits: Pick<ServerLimits, 'maxConnections' | 'maxConnectionsPerClient'>,
  onRefused: (reason: ConnectionRefusal, client: string) => void,
): void {
  if (!Number.isInteger(limits.maxConnections) || limits.maxConnections < 1) {
    throw new TypeError(`server limits: maxConnections must be an integer >= 1, got ${limits.maxConnections}`)
  }
  server.maxConnections = limits.maxConnections
  server.on('drop', (data?: { remoteAddress?: string }) =>
    onRefused('max_connections', clientKey(data?.remoteAddress ?? '')),
  )
  const perClient = limits.maxConnectionsPerClient
  if (perClient === undefined) return
  if (!Number.isInteger(perClient) || perClient < 1) {
    throw new TypeError(`server limits: maxConnectionsPerClient must be an integer >= 1, got ${perClient}`)
  }
  const open = new Map<string, number>()
  server.on('connection', (socket: Socket) => {
    const key = clientKey(socket.remoteAddress ?? '')
    const count = open.get(key) ?? 0
    if (count >= perClient) {
      onRefused('max_connections_per_client', key)
      socket.destroy()
      return
    }
    open.set(key, count + 1)
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1
      if (left === 0) open.delete(key)
      else open.set(key, left)
    })
  })
}

/**
 * Logs connection refusals without flooding the log during an attack: the first at once, then at most one
 * line per `everyMs` with how many were refused since.
 */
export function createRefusalLog(
  log: Pick<Logger, 'warn'>,
  everyMs = 10_000,
): (reason: ConnectionRefusal, client: string) => void {
  let lastMs = Number.NEGATIVE_INFINITY
  let since = 0
  return (reason, client) => {
    since++
    const now = Date.now()
    if (now - lastMs < everyMs) return
    log.warn(
      { event: 'connection_refused', reason, client, refused: since },
      'connection refused: limit reached',
    )
    lastMs = now
    since = 0
  }
}
