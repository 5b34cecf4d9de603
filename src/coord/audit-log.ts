import type { Clock } from '../core/clock.ts'
import type { Logger } from '../core/ports.ts'
import { AUDIT_TYPES, type AuditEvent, type AuditStore, type AuditType } from '../store/ports.ts'

const AUDITED: ReadonlySet<string> = new Set(AUDIT_TYPES)

// Only these fields of a log line go into the audit log: ids and facts, never a token or secret.
const KEPT = [
  'sid',
  'jti',
  'kid',
  'parent',
  'cascade',
  'reason',
  'state',
  'alg',
  'expiresAt',
  'activatesAt',
  'retiresAt',
  'bucket',
  'client',
  'credential',
  'retryAfterSeconds',
  'instance',
] as const

export interface AuditLog {
  /** The logger to hand to every part: lines with an audited `event` are also kept in the store. */
  logger: Logger
  /** Writes what is queued; kept queued (up to `maxQueued`) when the store is unreachable. */
  flush(): Promise<void>
  /** Events waiting for the store. */
  pending(): number
  /** Deletes events older than `retentionSeconds` (config `audit.retention`); returns how many. */
  prune(retentionSeconds: number): Promise<number>
  close(): Promise<void>
}

/**
 * The audit log of security events (sign-in, sign-out, token issue and revoke, key rotation, rate-limit
 * trips), taken from the structured log lines those parts already write, so no part needs to know about
 * it. Appended to the durable store in batches every `flushMs`; when the store is down they wait in
 * memory (bounded, oldest dropped first with a warning) and are written when it is back.
 *
 * @example
 * ```ts
 * const audit = createAuditLog({ store, log, clock })
 * const keyRing = await createKeyRing({ ...options, log: audit.logger })
 * ```
 */
export function createAuditLog(options: {
  store: AuditStore
  log: Logger
  clock: Clock
  /** Default 1000 ms. */
  flushMs?: number
  /** Default 10,000 events. */
  maxQueued?: number
}): AuditLog {
  const { store, log, clock } = options
  const maxQueued = options.maxQueued ?? 10_000
  let queue: AuditEvent[] = []
  let dropped = 0
  let flushing: Promise<void> | undefined

  function record(obj: object): void {
    const fields = obj as Record<string, unknown>
    const type = fields['event']
    if (typeof type !== 'string' || !AUDITED.has(type)) return
    const detail: AuditEvent['detail'] = {}
    for (const k of KEPT) {
      const v = fields[k]
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') detail[k] = v
    }
    const subject = fields['sub'] ?? fields['jti'] ?? fields['kid'] ?? fields['client']
    queue.push({
      at: Math.floor(clock.now() / 1000),
      type: type as AuditType,
      subject: typeof subject === 'string' ? subject : undefined,
      detail,
    })
    if (queue.length > maxQueued) {
      dropped += queue.length - maxQueued
      queue = queue.slice(queue.length - maxQueued)
    }
  }

  async function flush(): Promise<void> {
    if (flushing) return flushing
    if (queue.length === 0) return
    const batch = queue
    queue = []
    flushing = store
      .appendAudit(batch)
      .catch((err) => {
        // Back in front, in order: they are written when the store answers again.
        queue = [...batch, ...queue].slice(-maxQueued)
        log.warn(
          { event: 'audit_write_failed', pending: queue.length, err: (err as Error).message },
          'audit events kept in memory until the store is back',
        )
      })
      .finally(() => {
        flushing = undefined
      })
    await flushing
    if (dropped > 0) {
      log.warn(
        { event: 'audit_dropped', count: dropped },
        'audit events dropped: the store was down too long',
      )
      dropped = 0
    }
  }

  const timer = setInterval(() => void flush(), options.flushMs ?? 1000)
  timer.unref()

  const logger: Logger = {
    debug: (obj, msg) => log.debug(obj, msg),
    info(obj, msg) {
      record(obj)
      log.info(obj, msg)
    },
    warn(obj, msg) {
      record(obj)
      log.warn(obj, msg)
    },
    error: (obj, msg) => log.error(obj, msg),
  }

  return {
    logger,
    flush,
    pending: () => queue.length,
    async prune(retentionSeconds) {
      const before = Math.floor(clock.now() / 1000) - retentionSeconds
      const removed = await store.pruneAudit(before)
      if (removed > 0) log.info({ event: 'audit_pruned', removed, before }, 'old audit events deleted')
      return removed
    },
    async close() {
      clearInterval(timer)
      await flush()
    },
  }
}
