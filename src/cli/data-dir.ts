import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
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

export { openDatabase } from '../store/open-sqlite.ts'

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
