import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { loadConfigFile } from '../config/load.ts'

/**
 * Every command finds its state the same way: `--config FILE` (the config's `data_dir`, relative to
 * the file), or `--data DIR` in dev (default `.gatehouse/`).
 */
export function resolveDataDir(values: { config?: string | undefined; data?: string | undefined }): string {
  if (values.config !== undefined) {
    const { config, baseDir } = loadConfigFile(values.config)
    return resolve(baseDir, config.data_dir)
  }
  return resolve(values.data ?? '.gatehouse')
}

export function openDatabase(dataDir: string): DatabaseSync {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const file = resolve(dataDir, 'gatehouse.db')
  // It holds the embedded provider's private keys: owner-only, like the secret files. SQLite gives its
  // -wal and -shm files the database file's permissions.
  writeFileSync(file, '', { flag: 'a', mode: 0o600 })
  chmodSync(file, 0o600)
  const db = new DatabaseSync(file)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;')
  return db
}

/** A random secret kept in a file of the data dir (mode 600), created on first use. */
export function ensureSecretFile(dataDir: string, name: string, bytes = 32): string {
  const file = resolve(dataDir, name)
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    writeFileSync(file, randomBytes(bytes).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' })
  }
  chmodSync(file, 0o600)
  return readFileSync(file, 'utf8').trim()
}
