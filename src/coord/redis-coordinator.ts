import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger, SessionRevocationKind } from '../core/ports.ts'

export interface RedisCoordinatorOptions {
  /** `redis://` or `rediss://` URL (may carry a password: it is never logged). */
  url: string
  /** Prefix of every key and channel, e.g. `gatehouse:`. */
  prefix: string
  log: Logger
  /** Where the `gatehouse_redis_*` metrics go (the gateway's registry); none in CLI commands. */
  registry?: Registry | undefined
  /** How long to wait for Redis at start before going on without it. Default 2000 ms. */
  connectTimeoutMs?: number
  /** A command not answered in this time fails (and the caller falls back). Default 500 ms. */
  commandTimeoutMs?: number
}

export type RevokedEntry = { jti: string; expiresAt: number }

/** A session revocation as pushed: what it names, never when or until when (the store says that). */
export type SessionRevokedHint = { kind: SessionRevocationKind; value: string }

/**
 * Revocations one message may name; a message naming more is not read: the receiver reloads the
 * revocations from the store instead (as it does for a cascade that large).
 */
export const MAX_REVOKED_PER_MESSAGE = 1000
// Enough for MAX_REVOKED_PER_MESSAGE entries of the largest jti allowed; anything longer is not parsed.
const MAX_MESSAGE_CHARS = 64 + MAX_REVOKED_PER_MESSAGE * 160
const JTI = /^[A-Za-z0-9_-]{1,128}$/
// Enough for MAX_REVOKED_PER_MESSAGE session revocations of the longest value allowed.
const MAX_SESSION_MESSAGE_CHARS = 64 + MAX_REVOKED_PER_MESSAGE * 280
const SESSION_KINDS: ReadonlySet<string> = new Set(['sid', 'sub', 'psid'])
const SESSION_VALUE = /^[\x21-\x7e]{1,255}$/
const INSTANCE_ID = /^[A-Za-z0-9_-]{1,64}$/

/** What falls back to local behaviour while Redis is down. */
export type FallbackKind = 'rate_limit' | 'refresh_lock' | 'revocation_publish'

/**
 * Gatehouse's use of Redis: what is shared and fast, never what must last (that is the store). Every
 * user of it has a local fallback, so Redis being down degrades (local rate limits, per-instance
 * refresh single-flight, revocations by polling the store) and never stops verification.
 */
export interface RedisCoordinator {
  readonly client: Redis
  /** `prefix`, for keys built by other modules. */
  readonly prefix: string
  /** Identifies this process in published messages. */
  readonly instanceId: string
  /** True while the command connection is ready. */
  isUp(): boolean
  /** Counts (metric) a fallback to local behaviour; the log line is written on the transition down. */
  fellBack(kind: FallbackKind): void
  /**
   * Tell every instance these tokens are revoked. Best effort: the store is the source of truth and
   * every instance reloads it on a timer and on reconnecting; returns false when Redis did not take it.
   */
  publishRevoked(entries: readonly RevokedEntry[]): Promise<boolean>
  /**
   * Receive revocations pushed by any instance (this one included). `resync` runs each time the
   * subscription is (re)established: messages sent while it was down are lost, so reload from the store.
   * Anyone who can PUBLISH on the channel can send a message, so what `onRevoked` gets is a hint to be
   * confirmed against the store, never a fact: messages are read strictly (shape, jti syntax), and one
   * naming more than {@link MAX_REVOKED_PER_MESSAGE} runs `resync` (coalesced) instead.
   */
  subscribeRevoked(onRevoked: (entries: RevokedEntry[]) => void, resync: () => Promise<void>): Promise<void>
  /** Tell every instance these sessions are signed out; as {@link publishRevoked}, best effort. */
  publishSessionsRevoked(entries: readonly SessionRevokedHint[]): Promise<boolean>
  /**
   * Receive session revocations pushed by any instance, on a channel of their own: as with
   * {@link subscribeRevoked}, hints to confirm in the store, and `resync` after each reconnection.
   */
  subscribeSessionsRevoked(
    onRevoked: (entries: SessionRevokedHint[]) => void,
    resync: () => Promise<void>,
  ): Promise<void>
  close(): Promise<void>
}

/**
 * Connects to Redis (without waiting longer than `connectTimeoutMs`: an instance starts without it) and
 * keeps reconnecting in the background.
 *
 * @example
 * ```ts
 * const redis = await openRedisCoordinator({ url: 'redis://cache:6379', prefix: 'gatehouse:', log })
 * await redis.publishRevoked([{ jti, expiresAt }])
 * ```
 */
export async function openRedisCoordinator(options: RedisCoordinatorOptions): Promise<RedisCoordinator> {
  const { log, prefix } = options
  const instanceId = randomBytes(6).toString('base64url')
  const channel = `${prefix}revoked`
  const sessionChannel = `${prefix}sessions-revoked`
  const connectOptions = {
    lazyConnect: true,
    connectTimeout: options.connectTimeoutMs ?? 2000,
    commandTimeout: options.commandTimeoutMs ?? 500,
    // Fail at once while disconnected instead of queueing: a request must never wait for Redis.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
  }
  const client = new Redis(options.url, connectOptions)
  let down = false
  let closing = false
  const fallbacks = new Counter({
    name: 'gatehouse_redis_fallback_total',
    help: 'Operations done locally because Redis was unreachable, by kind (rate_limit, refresh_lock, revocation_publish)',
    labelNames: ['kind'],
    registers: options.registry ? [options.registry] : [],
  })
  new Gauge({
    name: 'gatehouse_redis_up',
    help: '1 while Gatehouse is connected to Redis',
    registers: options.registry ? [options.registry] : [],
    collect() {
      this.set(client.status === 'ready' ? 1 : 0)
    },
  })
  const markDown = (why: string) => {
    if (down || closing) return
    down = true
    log.warn(
      { event: 'redis_down', err: why },
      'Redis unreachable: local rate limits, per-instance refresh, revocations by polling the store',
    )
  }
  client.on('error', (err: Error) => markDown(err.message))
  client.on('close', () => markDown('connection closed'))
  client.on('ready', () => {
    if (down) log.info({ event: 'redis_up' }, 'Redis reachable again: shared limits and fan-out resumed')
    down = false
  })
  try {
    await client.connect()
  } catch (err) {
    markDown((err as Error).message)
  }

  let subscriber: Redis | undefined
  const handlers = new Map<string, (message: string) => void>()

  /** One subscribed connection for every channel (it can send nothing else, so it is a second one). */
  async function subscribe<T>(
    on: string,
    parse: (message: string) => T[] | 'oversized' | undefined,
    onMessage: (entries: T[]) => void,
    resync: () => Promise<void>,
    what: string,
  ): Promise<void> {
    if (subscriber === undefined) {
      // Unlike the command connection it may queue its SUBSCRIBE until Redis is there.
      subscriber = new Redis(options.url, {
        ...connectOptions,
        enableOfflineQueue: true,
        commandTimeout: undefined,
      })
      subscriber.on('error', () => {})
      subscriber.on('message', (ch: string, message: string) => handlers.get(ch)?.(message))
      subscriber.connect().catch(() => {})
    }
    // One resync at a time; asks while it runs make one more run after it.
    let resyncing: Promise<void> | undefined
    let again = false
    const requestResync = () => {
      if (resyncing !== undefined) {
        again = true
        return
      }
      resyncing = resync()
        .catch((err) =>
          log.warn(
            { event: 'revocation_resync_failed', what, err: (err as Error).message },
            `${what} reload failed`,
          ),
        )
        .finally(() => {
          resyncing = undefined
          if (again) {
            again = false
            requestResync()
          }
        })
    }
    handlers.set(on, (message) => {
      const parsed = parse(message)
      if (parsed === 'oversized') {
        log.warn(
          { event: 'revocation_message_oversized', what, chars: message.length },
          `a ${what} message too large to look up one by one: reloading them from the store`,
        )
        requestResync()
        return
      }
      if (parsed === undefined) {
        log.warn({ event: 'revocation_message_invalid', what }, `ignored an unreadable ${what} message`)
        return
      }
      if (parsed.length > 0) onMessage(parsed)
    })
    let first = subscriber.status !== 'ready'
    subscriber.on('ready', () => {
      // ioredis subscribes again by itself on reconnect; what was published meanwhile is reloaded.
      if (first) {
        first = false
        return
      }
      requestResync()
    })
    await subscriber.subscribe(on).catch((err) => {
      log.warn(
        { event: 'revocation_subscribe_failed', what, err: (err as Error).message },
        'not subscribed yet',
      )
    })
  }

  async function publish(on: string, message: string, what: string): Promise<boolean> {
    try {
      await client.publish(on, message)
      return true
    } catch (err) {
      fallbacks.inc({ kind: 'revocation_publish' })
      log.warn(
        { event: 'revocation_publish_failed', what, err: (err as Error).message },
        `${what} not pushed; other instances see it at their next reload from the store`,
      )
      return false
    }
  }

  return {
    client,
    prefix,
    instanceId,
    isUp: () => client.status === 'ready',
    fellBack(kind) {
      fallbacks.inc({ kind })
      if (client.status !== 'ready') markDown(`status ${client.status}`)
    },
    async publishRevoked(entries) {
      if (entries.length === 0) return true
      const message = JSON.stringify({ i: instanceId, r: entries.map((e) => [e.jti, e.expiresAt]) })
      return publish(channel, message, 'token revocation')
    },
    async subscribeRevoked(onRevoked, resync) {
      await subscribe(channel, parseRevoked, onRevoked, resync, 'token revocation')
    },
    async publishSessionsRevoked(entries) {
      if (entries.length === 0) return true
      const message = JSON.stringify({ i: instanceId, s: entries.map((e) => [e.kind, e.value]) })
      return publish(sessionChannel, message, 'session revocation')
    },
    async subscribeSessionsRevoked(onRevoked, resync) {
      await subscribe(sessionChannel, parseSessionsRevoked, onRevoked, resync, 'session revocation')
    },
    async close() {
      closing = true
      subscriber?.disconnect()
      // QUIT waits for the replies still due (a revocation just published by a CLI command).
      await client.quit().catch(() => client.disconnect())
    },
  }
}

/**
 * A message as {@link RedisCoordinator.publishRevoked} writes it, `{"i": instance, "r": [[jti, exp], ...]}`
 * and nothing else; `'oversized'` when it names (or may name) more than {@link MAX_REVOKED_PER_MESSAGE}.
 */
export function parseRevoked(message: string): RevokedEntry[] | 'oversized' | undefined {
  const r = parseEnvelope(message, MAX_MESSAGE_CHARS, 'r')
  if (!Array.isArray(r)) return r
  const out: RevokedEntry[] = []
  for (const item of r) {
    if (!Array.isArray(item) || item.length !== 2) return undefined
    const [jti, expiresAt] = item as [unknown, unknown]
    if (typeof jti !== 'string' || !JTI.test(jti)) return undefined
    if (typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt) || expiresAt < 0) return undefined
    out.push({ jti, expiresAt })
  }
  return out
}

/**
 * A message as {@link RedisCoordinator.publishSessionsRevoked} writes it, `{"i": instance, "s": [[kind,
 * value], ...]}` and nothing else; `'oversized'` when it names (or may name) more than
 * {@link MAX_REVOKED_PER_MESSAGE}.
 */
export function parseSessionsRevoked(message: string): SessionRevokedHint[] | 'oversized' | undefined {
  const s = parseEnvelope(message, MAX_SESSION_MESSAGE_CHARS, 's')
  if (!Array.isArray(s)) return s
  const out: SessionRevokedHint[] = []
  for (const item of s) {
    if (!Array.isArray(item) || item.length !== 2) return undefined
    const [kind, value] = item as [unknown, unknown]
    if (typeof kind !== 'string' || !SESSION_KINDS.has(kind)) return undefined
    if (typeof value !== 'string' || !SESSION_VALUE.test(value)) return undefined
    out.push({ kind: kind as SessionRevocationKind, value })
  }
  return out
}

/**
 * The envelope both revocation messages share, `{"i": instance, "<field>": [...]}` and nothing else: the
 * list, `'oversized'` when the message or the list is over its bound, undefined when it is not that shape.
 */
function parseEnvelope(
  message: string,
  maxChars: number,
  field: 'r' | 's',
): unknown[] | 'oversized' | undefined {
  if (message.length > maxChars) return 'oversized'
  let parsed: unknown
  try {
    parsed = JSON.parse(message)
  } catch {
    return undefined
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined
  const { i, [field]: list, ...rest } = parsed as Record<string, unknown>
  if (Object.keys(rest).length > 0) return undefined
  if (typeof i !== 'string' || !INSTANCE_ID.test(i) || !Array.isArray(list)) return undefined
  if (list.length > MAX_REVOKED_PER_MESSAGE) return 'oversized'
  return list
}
