import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { DatabaseSync } from 'node:sqlite'

/**
 * Opens (creating when missing) `<dataDir>/gatehouse.db`, owner-only: it holds private keys. WAL mode
 * so the gateway and a CLI command can use it at once.
 */
export function openDatabase(dataDir: string): DatabaseSync {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const file = resolve(dataDir, 'gatehouse.db')
  // SQLite gives its -wal and -shm files the database file's permissions.
  writeFileSync(file, '', { flag: 'a', mode: 0o600 })
  chmodSync(file, 0o600)
  const db = new DatabaseSync(file)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;')
  return db
}
