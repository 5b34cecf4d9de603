import { type Clock, systemClock } from '../core/clock.ts'
import { TokenExistsError } from './errors.ts'
import type {
  AlertRecord,
  AlertStore,
  AuditEvent,
  AuditStore,
  CacheStore,
  KeyRecord,
  KeyStore,
  SessionRevocationStore,
  StoredSessionRevocation,
  TokenRecord,
  TokenStore,
} from './ports.ts'
import {
  checkAlert,
  checkAudit,
  checkKeyTimes,
  checkSessionRevocation,
  checkTime,
  checkTokenTimes,
} from './validate.ts'

export interface MemoryStoreOptions {
  /** Default `systemClock`. Used when `listTokens` is called without `now`, and as session revocations' `storedAt`. */
  clock?: Clock
}

/**
 * Keys and tokens in plain Maps, for tests and single-process use. Records go in and come out as copies,
 * so a caller mutating one changes nothing stored.
 *
 * @example
 * ```ts
 * const store = createMemoryStore()
 * await store.insertToken({ jti: 't-1', subject: 'ci', scopes: ['deploy'], audience: 'api', parentJti: undefined,
 *   issuedAt: 1_767_225_600, expiresAt: 1_767_312_000, revokedAt: undefined, description: undefined })
 * ```
 */
export function createMemoryStore(
  options: MemoryStoreOptions = {},
): KeyStore & TokenStore & CacheStore & AlertStore & AuditStore & SessionRevocationStore {
  const clock = options.clock ?? systemClock
  const keys = new Map<string, KeyRecord>()
  const tokens = new Map<string, TokenRecord>()
  const cached = new Map<string, { value: string; fetchedAt: number }>()
  const alerts = new Map<string, AlertRecord>()
  const seen = new Map<string, number>()
  const audit: AuditEvent[] = []
  const sessionRevocations = new Map<string, StoredSessionRevocation>()
  const listSessionRevocations = (now: number, since: number) => {
    checkTime(now, 'now')
    return [...sessionRevocations.values()]
      .filter((r) => r.expiresAt > now && r.storedAt >= since)
      .sort(
        (a, b) => a.expiresAt - b.expiresAt || compareText(a.kind, b.kind) || compareText(a.value, b.value),
      )
      .map((r) => ({ ...r }))
  }

  return {
    async listKeys() {
      return [...keys.values()].sort(byCreation).map(copyKey)
    },

    async insertKey(key) {
      const record = copyKey(key)
      checkKeyTimes(record)
      if (keys.has(record.kid)) return false
      keys.set(record.kid, record)
      return true
    },

    async transitionKey(kid, from, to) {
      const key = keys.get(kid)
      if (key === undefined || key.state !== from) return false
      key.state = to
      return true
    },

    async deleteKey(kid) {
      return keys.delete(kid)
    },

    async insertToken(token) {
      const record = copyToken(token)
      checkTokenTimes(record)
      if (tokens.has(record.jti)) throw new TokenExistsError(record.jti)
      tokens.set(record.jti, record)
    },

    async getToken(jti) {
      const token = tokens.get(jti)
      return token === undefined ? undefined : copyToken(token)
    },

    async listTokens({ includeExpired = false, now = Math.floor(clock.now() / 1000) } = {}) {
      const all = [...tokens.values()]
      const selected = includeExpired ? all : all.filter((token) => token.expiresAt > now)
      return selected.sort(newestFirst).map(copyToken)
    },

    async listDescendants(jti) {
      // Breadth-first over parent links; `seen` also stops a cycle (parents are not checked on insert).
      const seen = new Set([jti])
      const found: TokenRecord[] = []
      let frontier = [jti]
      while (frontier.length > 0) {
        const parents = new Set(frontier)
        frontier = []
        for (const token of tokens.values()) {
          if (token.parentJti === undefined || !parents.has(token.parentJti) || seen.has(token.jti)) continue
          seen.add(token.jti)
          found.push(token)
          frontier.push(token.jti)
        }
      }
      return found.sort(newestFirst).map(copyToken)
    },

    async revokeTokens(jtis, at) {
      checkTime(at, 'at')
      let changed = 0
      for (const jti of jtis) {
        const token = tokens.get(jti)
        if (token === undefined || token.revokedAt !== undefined) continue
        token.revokedAt = at
        changed++
      }
      return changed
    },

    async listRevoked(now) {
      return [...tokens.values()]
        .filter((token) => token.revokedAt !== undefined && token.expiresAt > now)
        .sort((a, b) => a.expiresAt - b.expiresAt || compareText(a.jti, b.jti))
        .map(({ jti, expiresAt }) => ({ jti, expiresAt }))
    },

    async revokeSessions(entries) {
      for (const e of entries) checkSessionRevocation(e)
      const storedAt = Math.floor(clock.now() / 1000)
      for (const e of entries) {
        const k = `${e.kind}\u0000${e.value}`
        const prior = sessionRevocations.get(k)
        sessionRevocations.set(k, {
          kind: e.kind,
          value: e.value,
          revokedAt: Math.max(e.revokedAt, prior?.revokedAt ?? e.revokedAt),
          expiresAt: Math.max(e.expiresAt, prior?.expiresAt ?? e.expiresAt),
          storedAt,
        })
      }
    },

    async listSessionRevocations(now) {
      return listSessionRevocations(now, Number.NEGATIVE_INFINITY)
    },

    async listSessionRevocationsSince(now, sinceStoredAt) {
      checkTime(sinceStoredAt, 'sinceStoredAt')
      return listSessionRevocations(now, sinceStoredAt)
    },

    async getSessionRevocation(kind, value) {
      const hit = sessionRevocations.get(`${kind}\u0000${value}`)
      if (hit === undefined) return undefined
      const { storedAt: _, ...revocation } = hit
      return revocation
    },

    async pruneSessionRevocations(now) {
      checkTime(now, 'now')
      let n = 0
      for (const [k, r] of sessionRevocations) {
        if (r.expiresAt <= now && sessionRevocations.delete(k)) n++
      }
      return n
    },

    async getCached(key) {
      const hit = cached.get(key)
      return hit === undefined ? undefined : { ...hit }
    },

    async putCached(key, value, fetchedAt) {
      checkTime(fetchedAt, 'fetchedAt')
      cached.set(key, { value, fetchedAt })
    },

    async listAlerts() {
      return [...alerts.values()]
        .sort((a, b) => compareText(a.credential, b.credential) || a.thresholdSeconds - b.thresholdSeconds)
        .map((a) => ({ ...a }))
    },

    async putAlert(record) {
      checkAlert(record)
      alerts.set(`${record.credential}\u0000${record.thresholdSeconds}`, { ...record })
    },

    async deleteAlerts(credential) {
      let n = 0
      for (const [k, a] of alerts) {
        if (a.credential === credential && alerts.delete(k)) n++
      }
      return n
    },

    async appendAudit(events) {
      for (const e of events) checkAudit(e)
      for (const e of events) audit.push(copyAudit(e))
    },

    async listAudit({ since, limit = 1000 }) {
      checkTime(since, 'since')
      const found = audit.filter((e) => e.at >= since).sort((a, b) => a.at - b.at)
      return found.slice(Math.max(0, found.length - limit)).map(copyAudit)
    },

    async pruneAudit(before) {
      checkTime(before, 'before')
      const kept = audit.filter((e) => e.at >= before)
      const removed = audit.length - kept.length
      audit.splice(0, audit.length, ...kept)
      return removed
    },

    async markSeen(key, at) {
      checkTime(at, 'at')
      const first = seen.get(key)
      if (first !== undefined) return first
      seen.set(key, at)
      return at
    },
  }
}

function copyAudit(e: AuditEvent): AuditEvent {
  return { at: e.at, type: e.type, subject: e.subject, detail: { ...e.detail } }
}

function copyKey(key: KeyRecord): KeyRecord {
  return {
    kid: key.kid,
    alg: key.alg,
    state: key.state,
    publicJwk: structuredClone(key.publicJwk),
    privateJwe: key.privateJwe,
    createdAt: key.createdAt,
    activatesAt: key.activatesAt,
    retiresAt: key.retiresAt,
    removeAt: key.removeAt,
  }
}

function copyToken(token: TokenRecord): TokenRecord {
  return {
    jti: token.jti,
    subject: token.subject,
    scopes: [...token.scopes],
    audience: token.audience,
    parentJti: token.parentJti,
    issuedAt: token.issuedAt,
    expiresAt: token.expiresAt,
    revokedAt: token.revokedAt,
    description: token.description,
  }
}

// The same orders as the SQLite store's ORDER BY clauses (jti compared like SQLite's BINARY collation for ASCII).
function byCreation(a: KeyRecord, b: KeyRecord): number {
  return a.createdAt - b.createdAt || compareText(a.kid, b.kid)
}

function newestFirst(a: TokenRecord, b: TokenRecord): number {
  return b.issuedAt - a.issuedAt || compareText(b.jti, a.jti)
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
