import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { type Clock, systemClock } from '../core/clock.ts'
import type { Logger } from '../core/ports.ts'
import { StoreUnavailableError } from '../store/errors.ts'
import type {
  AlertStore,
  AuditStore,
  CacheStore,
  KeyRecord,
  KeyStore,
  SessionRevocationStore,
  StoredSessionRevocation,
  TokenStore,
} from '../store/ports.ts'

type Store = KeyStore & TokenStore & CacheStore & SessionRevocationStore

interface Copy {
  version: 1
  savedAt: number
  keys: KeyRecord[]
  revoked: Array<{ jti: string; expiresAt: number }>
  /** Session revocations (Gatehouse 8); absent in copies written before, and so is `storedAt`. */
  sessions?: Array<Omit<StoredSessionRevocation, 'storedAt'> & { storedAt?: number }>
  cached: Record<string, { value: string; fetchedAt: number }>
}

/** An unchanged copy is saved again after this long, so its `savedAt` says how current it is. */
const LOCAL_COPY_RESAVE_SECONDS = 3600

const empty = (): Copy => ({ version: 1, savedAt: 0, keys: [], revoked: [], sessions: [], cached: {} })

/**
 * The last copy of what verification needs (keys, with private halves still encrypted at rest;
 * token and session revocations; the provider's discovery and JWKS), kept in `data_dir/shared-store-copy.json`
 * (owner-only) and rewritten each time the shared store answers with something new. An instance
 * that starts while PostgreSQL is unreachable verifies from it.
 */
export function readLocalCopy(file: string): Copy | undefined {
  if (!existsSync(file)) return undefined
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Copy
    if (parsed.version !== 1 || !Array.isArray(parsed.keys) || !Array.isArray(parsed.revoked))
      return undefined
    return parsed
  } catch {
    return undefined
  }
}

/**
 * Seconds since the copy was last saved (by `clock`); undefined when it does not say (then its age is
 * unknown and it is treated as too old).
 */
export function localCopyAge(copy: { savedAt?: unknown }, clock: Clock = systemClock): number | undefined {
  const { savedAt } = copy
  if (typeof savedAt !== 'number' || !Number.isSafeInteger(savedAt) || savedAt <= 0) return undefined
  // A copy from the future (clocks apart) counts as just saved.
  return Math.max(0, Math.floor(clock.now() / 1000) - savedAt)
}

/** Wraps a store so that what it reads is saved to the local copy (whole file, atomically: write then rename). */
export function withLocalCopy<S extends Store>(
  store: S,
  file: string,
  log: Logger,
  clock: Clock = systemClock,
): S {
  const copy = readLocalCopy(file) ?? empty()
  let written = JSON.stringify(copy)
  let writtenAt = copy.savedAt
  const save = () => {
    const now = Math.floor(clock.now() / 1000)
    const body = JSON.stringify({ ...copy, savedAt: 0 })
    // Unchanged, it is still saved again hourly: `savedAt` is when PostgreSQL last confirmed it (within
    // an hour), which is what store.local_copy_max_age is checked against at start.
    if (body === written && now - writtenAt < LOCAL_COPY_RESAVE_SECONDS) return
    copy.savedAt = now
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
      const tmp = `${file}.${process.pid}.tmp`
      writeFileSync(tmp, JSON.stringify(copy), { mode: 0o600 })
      renameSync(tmp, file)
      written = body
      writtenAt = now
    } catch (err) {
      log.warn(
        { event: 'local_copy_failed', err: (err as Error).message },
        'local copy of the store not saved',
      )
    }
  }
  return {
    ...store,
    async listKeys() {
      const keys = await store.listKeys()
      copy.keys = keys
      save()
      return keys
    },
    async listRevoked(now: number) {
      const revoked = await store.listRevoked(now)
      copy.revoked = revoked
      save()
      return revoked
    },
    async listSessionRevocations(now: number) {
      const sessions = await store.listSessionRevocations(now)
      copy.sessions = sessions
      save()
      return sessions
    },
    async listSessionRevocationsSince(now: number, sinceStoredAt: number) {
      const changed = await store.listSessionRevocationsSince(now, sinceStoredAt)
      if (changed.length > 0) {
        const byKey = new Map((copy.sessions ?? []).map((r) => [`${r.kind}\u0000${r.value}`, r]))
        for (const r of changed) byKey.set(`${r.kind}\u0000${r.value}`, r)
        copy.sessions = [...byKey.values()].filter((r) => r.expiresAt > now)
        save()
      }
      return changed
    },
    async getCached(key: string) {
      const hit = await store.getCached(key)
      if (hit !== undefined) {
        copy.cached[key] = { ...hit }
        save()
      }
      return hit
    },
    async putCached(key: string, value: string, fetchedAt: number) {
      await store.putCached(key, value, fetchedAt)
      copy.cached[key] = { value, fetchedAt }
      save()
    },
  }
}

/**
 * A store that opens the shared store lazily: until it opens (it is retried at most every `retryMs`),
 * reads come from the local copy and writes fail with {@link StoreUnavailableError}. Used when an
 * instance starts while PostgreSQL is down but a local copy exists.
 */
export function createReconnectingStore<S extends Store & AuditStore & AlertStore>(options: {
  open: () => Promise<S>
  copy: Copy
  log: Logger
  retryMs?: number
}): Store & AuditStore & AlertStore & { primary(): S | undefined } {
  const { log } = options
  const retryMs = options.retryMs ?? 5000
  let primary: S | undefined
  let lastTry = Number.NEGATIVE_INFINITY
  let opening: Promise<void> | undefined
  const copy = options.copy

  async function ready(): Promise<S | undefined> {
    if (primary !== undefined) return primary
    if (opening === undefined && Date.now() - lastTry >= retryMs) {
      lastTry = Date.now()
      opening = options
        .open()
        .then((s) => {
          primary = s
          log.info({ event: 'store_up' }, 'shared store reachable: leaving the local copy')
        })
        .catch((err) => {
          log.warn({ event: 'store_down', err: (err as Error).message }, 'shared store still unreachable')
        })
        .finally(() => {
          opening = undefined
        })
    }
    if (opening !== undefined) await opening
    return primary
  }
  // A copy written before storedAt was kept: its revocations count as stored when it was saved.
  const copiedSessions = (now: number, since: number): StoredSessionRevocation[] =>
    (copy.sessions ?? [])
      .map((r) => ({ ...r, storedAt: r.storedAt ?? copy.savedAt }))
      .filter((r) => r.expiresAt > now && r.storedAt >= since)
  const refuse = (): never => {
    throw new StoreUnavailableError(
      'PostgreSQL',
      'not reached since this instance started (serving from the local copy)',
    )
  }
  return {
    primary: () => primary,
    async listKeys() {
      const s = await ready()
      return s ? s.listKeys() : structuredClone(copy.keys)
    },
    async listRevoked(now) {
      const s = await ready()
      return s ? s.listRevoked(now) : copy.revoked.filter((r) => r.expiresAt > now).map((r) => ({ ...r }))
    },
    async listSessionRevocations(now) {
      const s = await ready()
      if (s) return s.listSessionRevocations(now)
      return copiedSessions(now, Number.MIN_SAFE_INTEGER)
    },
    async listSessionRevocationsSince(now, sinceStoredAt) {
      const s = await ready()
      if (s) return s.listSessionRevocationsSince(now, sinceStoredAt)
      return copiedSessions(now, sinceStoredAt)
    },
    async getSessionRevocation(kind, value) {
      const s = await ready()
      if (s) return s.getSessionRevocation(kind, value)
      const hit = (copy.sessions ?? []).find((r) => r.kind === kind && r.value === value)
      return hit === undefined ? undefined : { ...hit }
    },
    async revokeSessions(entries) {
      return ((await ready()) ?? refuse()).revokeSessions(entries)
    },
    async pruneSessionRevocations(now) {
      return ((await ready()) ?? refuse()).pruneSessionRevocations(now)
    },
    async getCached(key) {
      const s = await ready()
      if (s) return s.getCached(key)
      const hit = copy.cached[key]
      return hit === undefined ? undefined : { ...hit }
    },
    async putCached(key, value, fetchedAt) {
      const s = await ready()
      if (s) return s.putCached(key, value, fetchedAt)
      // Kept for this process; persisted once the store is back and the copy is fetched again.
      copy.cached[key] = { value, fetchedAt }
    },
    async insertKey(key) {
      return ((await ready()) ?? refuse()).insertKey(key)
    },
    async transitionKey(kid, from, to) {
      return ((await ready()) ?? refuse()).transitionKey(kid, from, to)
    },
    async deleteKey(kid) {
      return ((await ready()) ?? refuse()).deleteKey(kid)
    },
    async insertToken(token) {
      return ((await ready()) ?? refuse()).insertToken(token)
    },
    async getToken(jti) {
      return ((await ready()) ?? refuse()).getToken(jti)
    },
    async listTokens(options) {
      return ((await ready()) ?? refuse()).listTokens(options)
    },
    async listDescendants(jti) {
      return ((await ready()) ?? refuse()).listDescendants(jti)
    },
    async revokeTokens(jtis, at) {
      return ((await ready()) ?? refuse()).revokeTokens(jtis, at)
    },
    async appendAudit(events) {
      return ((await ready()) ?? refuse()).appendAudit(events)
    },
    async listAudit(options) {
      return ((await ready()) ?? refuse()).listAudit(options)
    },
    async pruneAudit(before) {
      return ((await ready()) ?? refuse()).pruneAudit(before)
    },
    // Alert state is not in the local copy: no alert is sent until PostgreSQL is back (then nothing
    // due is lost, and nothing is sent twice).
    async listAlerts() {
      return ((await ready()) ?? refuse()).listAlerts()
    },
    async putAlert(record) {
      return ((await ready()) ?? refuse()).putAlert(record)
    },
    async deleteAlerts(credential) {
      return ((await ready()) ?? refuse()).deleteAlerts(credential)
    },
    async markSeen(key, at) {
      return ((await ready()) ?? refuse()).markSeen(key, at)
    },
  }
}
