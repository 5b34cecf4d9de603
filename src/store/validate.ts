import {
  type AlertRecord,
  AUDIT_TYPES,
  type AuditEvent,
  type KeyRecord,
  type SessionRevocation,
  type TokenRecord,
} from './ports.ts'

// Times are whole seconds: the SQLite store keeps them in STRICT INTEGER columns, and every store must
// refuse the same input.
function checkTime(value: unknown, path: string): void {
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(`${path}: expected whole seconds since the epoch, found ${String(value)}`)
  }
}

export function checkKeyTimes(key: KeyRecord): void {
  checkTime(key.createdAt, 'key.createdAt')
  checkTime(key.activatesAt, 'key.activatesAt')
  checkTime(key.retiresAt, 'key.retiresAt')
  checkTime(key.removeAt, 'key.removeAt')
}

export function checkTokenTimes(token: TokenRecord): void {
  checkTime(token.issuedAt, 'token.issuedAt')
  checkTime(token.expiresAt, 'token.expiresAt')
  if (token.revokedAt !== undefined) checkTime(token.revokedAt, 'token.revokedAt')
}

export function checkAlert(alert: AlertRecord): void {
  if (typeof alert.credential !== 'string' || alert.credential === '')
    throw new TypeError('alert.credential: expected a non-empty string')
  checkTime(alert.thresholdSeconds, 'alert.thresholdSeconds')
  checkTime(alert.expiresAt, 'alert.expiresAt')
  checkTime(alert.attempts, 'alert.attempts')
  checkTime(alert.nextAttemptAt, 'alert.nextAttemptAt')
  if (alert.sentAt !== undefined) checkTime(alert.sentAt, 'alert.sentAt')
}

export { checkTime }

const AUDITED: ReadonlySet<string> = new Set(AUDIT_TYPES)

export function checkAudit(event: AuditEvent): void {
  checkTime(event.at, 'audit.at')
  if (!AUDITED.has(event.type)) throw new TypeError(`audit.type: unknown event type ${String(event.type)}`)
  for (const [k, v] of Object.entries(event.detail)) {
    if (!['string', 'number', 'boolean'].includes(typeof v)) {
      throw new TypeError(`audit.detail.${k}: expected a string, number or boolean`)
    }
  }
}

const SESSION_REVOCATION_KINDS: ReadonlySet<string> = new Set(['sid', 'sub', 'psid'])

/** What a revocation may name: a session id, a `sub` or a provider `sid`, 1-255 visible ASCII characters. */
export const SESSION_REVOCATION_VALUE = /^[\x21-\x7e]{1,255}$/

export function checkSessionRevocation(entry: SessionRevocation): void {
  if (!SESSION_REVOCATION_KINDS.has(entry.kind))
    throw new TypeError(`session revocation kind: expected sid, sub or psid, found ${String(entry.kind)}`)
  if (typeof entry.value !== 'string' || !SESSION_REVOCATION_VALUE.test(entry.value))
    throw new TypeError('session revocation value: expected 1-255 visible ASCII characters')
  checkTime(entry.revokedAt, 'session revocation revokedAt')
  checkTime(entry.expiresAt, 'session revocation expiresAt')
}
