import type { KeyRecord, TokenRecord } from './ports.ts'

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

export { checkTime }
