import type { Clock } from './clock.ts'
import { lookUpEach } from './look-up-each.ts'
import type {
  Logger,
  SessionRevocation,
  SessionRevocationKind,
  SessionRevocationStore,
  SessionRevocations,
  StoredSessionRevocation,
} from './ports.ts'

export interface SessionRevocationListOptions {
  /** Where revocations are kept and shared; absent: this process only (fetch and edge adapters). */
  store?: SessionRevocationStore | undefined
  clock: Clock
  log: Logger
  /** lifetimes.session.max_ttl: no session signed in before a revocation by user outlives it by more. */
  maxTtlSeconds: number
  /** Called with what was stored, e.g. to push it to the other instances (Redis). */
  onRevoked?: ((entries: SessionRevocation[]) => void) | undefined
}

export interface SessionRevocationList extends SessionRevocations {
  /**
   * Replace the list with the store's (entries revoked here or confirmed meanwhile are kept), after
   * storing any revocation the store could not take before. Rejects when the store is unreachable:
   * the list in memory stays as it was.
   */
  reload(): Promise<void>
  /**
   * What the timer calls: merges the revocations stored since the last one seen (less
   * {@link REFRESH_OVERLAP_SECONDS}), after storing any the store could not take before; a full
   * {@link reload} instead when none was seen yet or the last full one is {@link FULL_RELOAD_MS} old.
   * Rejects when the store is unreachable.
   */
  refresh(): Promise<void>
  /**
   * Revocations another instance says it made (a Redis message, which anyone able to publish can send):
   * each is looked up in the store and taken only as the store has it. More than `maxHints` at once, or a
   * backlog, reloads the whole list instead. Never rejects.
   */
  markRevoked(hints: ReadonlyArray<{ kind: SessionRevocationKind; value: string }>): Promise<void>
  /** Entries held in memory. */
  readonly size: number
}

/** Hints of one message looked up one by one; more, and the list is reloaded. */
export const MAX_SESSION_HINTS = 1000
const MAX_PENDING_HINTS = 10_000
const HINT_LOOKUPS = 4
const MAX_UNSHARED = 10_000
const KINDS: ReadonlySet<string> = new Set(['sid', 'sub', 'psid'])
const VALUE = /^[\x21-\x7e]{1,255}$/

/** A refresh reads the whole list again this often (ms), which also forgets expired entries. */
export const FULL_RELOAD_MS = 300_000
/**
 * A refresh rereads this far behind the latest `storedAt` it saw: a write dated earlier may commit later,
 * and instances' clocks differ from the store's.
 */
export const REFRESH_OVERLAP_SECONDS = 60

const keyOf = (kind: SessionRevocationKind, value: string) => `${kind}\u0000${value}`

/**
 * The session revocation list (Gatehouse 8): Maps in memory, looked up on every request without I/O;
 * written through to the store and pushed to the other instances, reloaded from the store on a timer.
 * A revocation by session id refuses that session; one by user (`sub`) or by provider session (`psid`)
 * refuses every such session signed in at or before the revocation (sign out everywhere).
 *
 * @example
 * const revocations = createSessionRevocationList({ store, clock, log, maxTtlSeconds: 86_400 })
 * await revocations.revoke([{ kind: 'sub', value: 'alice' }])
 * revocations.isRevoked(session) // true for every session alice signed in before
 */
export function createSessionRevocationList(options: SessionRevocationListOptions): SessionRevocationList {
  const { store, clock, log, maxTtlSeconds } = options
  if (!(Number.isInteger(maxTtlSeconds) && maxTtlSeconds > 0))
    throw new TypeError('session revocations: maxTtlSeconds must be a positive integer')
  const nowSeconds = () => Math.floor(clock.now() / 1000)
  // Session id → expiry; user or provider session → the latest revocation time (and its expiry).
  let bySid = new Map<string, number>()
  let bySub = new Map<string, SessionRevocation>()
  let byProviderSid = new Map<string, SessionRevocation>()
  // Taken since the current reload started reading (it may have read before they were stored).
  let recent = new Map<string, SessionRevocation>()
  // Revoked here, being written to the store: a reload reading meanwhile may not see them yet.
  const writing = new Map<string, SessionRevocation>()
  // Revoked here while the store was unreachable: held here, and stored by the next reload that can.
  const unstored = new Map<string, SessionRevocation>()
  // The latest storedAt read (the store's clock), and when (this clock) the last full reload read.
  let lastStoredAt: number | undefined
  let fullAt = Number.NEGATIVE_INFINITY

  function hold(e: SessionRevocation) {
    if (e.kind === 'sid') {
      bySid.set(e.value, Math.max(e.expiresAt, bySid.get(e.value) ?? 0))
      return
    }
    const map = e.kind === 'sub' ? bySub : byProviderSid
    const prior = map.get(e.value)
    if (prior === undefined || prior.revokedAt < e.revokedAt || prior.expiresAt < e.expiresAt) {
      map.set(e.value, {
        ...e,
        revokedAt: Math.max(e.revokedAt, prior?.revokedAt ?? 0),
        expiresAt: Math.max(e.expiresAt, prior?.expiresAt ?? 0),
      })
    }
  }

  function take(e: SessionRevocation) {
    hold(e)
    if (store !== undefined) recent.set(keyOf(e.kind, e.value), e)
    else if (bySid.size + bySub.size + byProviderSid.size > MAX_UNSHARED) forgetExpired()
  }

  // Without a store nothing reloads the list: expired entries go when it grows.
  function forgetExpired() {
    const now = nowSeconds()
    for (const [sid, exp] of bySid) if (exp <= now) bySid.delete(sid)
    for (const [k, e] of bySub) if (e.expiresAt <= now) bySub.delete(k)
    for (const [k, e] of byProviderSid) if (e.expiresAt <= now) byProviderSid.delete(k)
  }

  async function storeUnstored(now: number): Promise<void> {
    if (store !== undefined && unstored.size > 0) {
      const late = [...unstored.values()].filter((e) => e.expiresAt > now)
      try {
        await store.revokeSessions(late)
        unstored.clear()
        options.onRevoked?.(late)
        log.info(
          { event: 'session_revocations_stored', count: late.length },
          'session revocations stored late',
        )
      } catch {
        // Still unreachable: kept, and tried again at the next refresh or reload.
      }
    }
  }

  async function reload(): Promise<void> {
    const now = nowSeconds()
    const startedAt = clock.now()
    await storeUnstored(now)
    const before = recent
    recent = new Map()
    let list: StoredSessionRevocation[]
    try {
      list = store === undefined ? [] : await store.listSessionRevocations(now)
    } catch (err) {
      for (const [k, e] of before) if (!recent.has(k)) recent.set(k, e)
      throw err
    }
    const prior = { bySid, bySub, byProviderSid }
    bySid = new Map()
    bySub = new Map()
    byProviderSid = new Map()
    lastStoredAt = undefined
    for (const e of list) {
      hold(e)
      lastStoredAt = Math.max(e.storedAt, lastStoredAt ?? e.storedAt)
    }
    fullAt = startedAt
    if (store === undefined) {
      // Nothing to read back: what this process revoked is the list, less what expired.
      for (const [sid, exp] of prior.bySid) if (exp > now) bySid.set(sid, exp)
      for (const e of prior.bySub.values()) if (e.expiresAt > now) hold(e)
      for (const e of prior.byProviderSid.values()) if (e.expiresAt > now) hold(e)
    }
    for (const e of recent.values()) if (e.expiresAt > now) hold(e)
    for (const e of writing.values()) if (e.expiresAt > now) hold(e)
    for (const e of unstored.values()) if (e.expiresAt > now) hold(e)
  }

  async function refresh(): Promise<void> {
    if (store === undefined || lastStoredAt === undefined || clock.now() - fullAt >= FULL_RELOAD_MS)
      return reload()
    const now = nowSeconds()
    await storeUnstored(now)
    const since = lastStoredAt - REFRESH_OVERLAP_SECONDS
    // Only adds or extends entries; as taken (into `recent`), a full reload reading meanwhile keeps them.
    for (const e of await store.listSessionRevocationsSince(now, since)) {
      take(e)
      lastStoredAt = Math.max(e.storedAt, lastStoredAt ?? e.storedAt)
    }
  }

  const revoke: SessionRevocationList['revoke'] = async (entries) => {
    const now = nowSeconds()
    const records: SessionRevocation[] = []
    for (const e of entries) {
      if (!KINDS.has(e.kind) || typeof e.value !== 'string' || !VALUE.test(e.value))
        throw new TypeError(`session revocation: ${String(e.kind)} must be 1-255 visible ASCII characters`)
      const at = Math.min(now, e.revokedAt ?? now)
      if (!Number.isSafeInteger(at))
        throw new TypeError('session revocation: revokedAt must be whole seconds')
      records.push({
        kind: e.kind,
        value: e.value,
        revokedAt: at,
        expiresAt: e.expiresAt ?? at + maxTtlSeconds,
      })
    }
    if (store === undefined) {
      for (const r of records) take(r)
      return records
    }
    // Refused here at once; kept across reloads while written, then as taken since the reload began.
    for (const r of records) {
      hold(r)
      writing.set(keyOf(r.kind, r.value), r)
    }
    try {
      await store.revokeSessions(records)
    } catch (err) {
      for (const r of records) unstored.set(keyOf(r.kind, r.value), r)
      throw err
    } finally {
      for (const r of records) writing.delete(keyOf(r.kind, r.value))
    }
    for (const r of records) take(r)
    options.onRevoked?.(records)
    return records
  }

  const confirming = new Set<string>()

  async function markRevoked(
    hints: ReadonlyArray<{ kind: SessionRevocationKind; value: string }>,
  ): Promise<void> {
    if (store === undefined || !Array.isArray(hints)) return
    const reloadInstead = (event: string, count: number) => {
      log.warn({ event, count }, 'session revocation hints not looked up one by one: reloading the list')
      return reload().catch((err: unknown) =>
        log.warn({ event: 'session_revocation_reload_failed', err: (err as Error).message }, 'not reloaded'),
      )
    }
    if (hints.length > MAX_SESSION_HINTS)
      return reloadInstead('session_revocation_hint_oversized', hints.length)
    const todo = new Map<string, { kind: SessionRevocationKind; value: string }>()
    for (const h of hints) {
      const kind = (h as { kind?: unknown } | undefined)?.kind
      const value = (h as { value?: unknown } | undefined)?.value
      if (typeof kind !== 'string' || !KINDS.has(kind) || typeof value !== 'string' || !VALUE.test(value))
        continue
      const k = keyOf(kind as SessionRevocationKind, value)
      // A session id is revoked once; a user or provider session may be revoked again, later.
      if (kind === 'sid' && bySid.has(value)) continue
      if (!confirming.has(k)) todo.set(k, { kind: kind as SessionRevocationKind, value })
    }
    if (todo.size === 0) return
    if (confirming.size + todo.size > MAX_PENDING_HINTS)
      return reloadInstead('session_revocation_hint_backlog', todo.size)
    for (const k of todo.keys()) confirming.add(k)
    const unreachable = await lookUpEach(
      [...todo],
      HINT_LOOKUPS,
      async ([, h]) => {
        const found = await store.getSessionRevocation(h.kind, h.value)
        if (found !== undefined && found.expiresAt > nowSeconds()) take(found)
      },
      ([k]) => confirming.delete(k),
    )
    if (unreachable !== undefined) {
      log.warn(
        { event: 'session_revocation_hint_unconfirmed', count: todo.size, err: unreachable.message },
        'session revocations pushed by another instance could not be confirmed in the store: left to the next reload',
      )
    }
  }

  return {
    isRevoked(session) {
      if (bySid.size > 0 && bySid.has(session.sid)) return true
      if (bySub.size > 0) {
        const r = bySub.get(session.identity.sub)
        if (r !== undefined && session.signedInAt <= r.revokedAt) return true
      }
      if (byProviderSid.size > 0 && session.providerSid !== undefined) {
        const r = byProviderSid.get(session.providerSid)
        if (r !== undefined && session.signedInAt <= r.revokedAt) return true
      }
      return false
    },
    revoke,
    reload,
    refresh,
    markRevoked,
    get size() {
      return bySid.size + bySub.size + byProviderSid.size
    },
  }
}
