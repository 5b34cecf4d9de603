import type { Clock } from '../core/clock.ts'
import type { Logger } from '../core/ports.ts'
import { StoreUnavailableError } from '../store/errors.ts'
import { AUDIT_TYPES, type AuditEvent, type AuditStore, type AuditType } from '../store/ports.ts'

const AUDITED: ReadonlySet<string> = new Set(AUDIT_TYPES)

// Only these fields of a log line go into the audit log: ids and facts, never a token or secret.
const KEPT = [
  'sid',
  'kind',
  'psid',
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

// C0 and C1 control characters (NUL included: PostgreSQL refuses it in text), and DEL.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g

/** A string as it may be stored: without control characters (a log line's value may carry anything). */
function clean(value: string): string {
  return value.replace(CONTROL, '')
}

/**
 * Whether a failed write may succeed later as it is: the store was unreachable (PostgreSQL raises
 * {@link StoreUnavailableError} for a lost or refused connection) or busy (SQLite's lock held past its
 * busy timeout). Anything else is about the events themselves and would fail again.
 */
function isTransient(err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return true
  const errcode = (err as { errcode?: unknown } | undefined)?.errcode
  // SQLITE_BUSY, SQLITE_LOCKED
  return errcode === 5 || errcode === 6
}

export interface AuditLog {
  /** The logger to hand to every part: lines with an audited `event` are also kept in the store. */
  logger: Logger
  /**
   * Writes what is queued; kept queued (up to `maxQueued`) when the store is unreachable. An event the
   * store refuses (anything but unreachable) is dropped and logged by type, so it never blocks the rest.
   */
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
      if (typeof v === 'string') detail[k] = clean(v)
      else if (typeof v === 'number' || typeof v === 'boolean') detail[k] = v
    }
    const subject = fields['sub'] ?? fields['jti'] ?? fields['kid'] ?? fields['client']
    queue.push({
      at: Math.floor(clock.now() / 1000),
      type: type as AuditType,
      subject: typeof subject === 'string' ? clean(subject) : undefined,
      detail,
    })
    if (queue.length > maxQueued) {
      dropped += queue.length - maxQueued
      queue = queue.slice(queue.length - maxQueued)
    }
  }

  /** Puts events that could not be written back in front, in order: written when the store answers. */
  function requeue(events: AuditEvent[], err: unknown): void {
    queue = [...events, ...queue].slice(-maxQueued)
    log.warn(
      { event: 'audit_write_failed', pending: queue.length, err: (err as Error).message },
      'audit events kept in memory until the store is back',
    )
  }

  /**
   * One event at a time, after the batch (one statement, all or none) was refused for something other
   * than the store being unreachable: the event the store cannot take is dropped, with its type only in
   * the log (its content is what the store refused, and may be anything), so it never blocks the others.
   */
  async function writeOneByOne(batch: AuditEvent[]): Promise<void> {
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i]!
      try {
        await store.appendAudit([e])
      } catch (err) {
        if (isTransient(err)) {
          requeue(batch.slice(i), err)
          return
        }
        log.error(
          {
            event: 'audit_event_dropped',
            type: e.type,
            // The error's kind only: its message may quote the event.
            err: (err as Error).name,
            code: (err as { code?: unknown }).code,
          },
          'an audit event the store refuses was dropped',
        )
      }
    }
  }

  async function write(batch: AuditEvent[]): Promise<void> {
    try {
      await store.appendAudit(batch)
    } catch (err) {
      if (isTransient(err)) requeue(batch, err)
      else await writeOneByOne(batch)
    }
  }

  async function flush(): Promise<void> {
    if (flushing) return flushing
    if (queue.length === 0) return
    const batch = queue
    queue = []
    flushing = write(batch).finally(() => {
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
