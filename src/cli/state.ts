import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { loadConfigFile } from '../config/load.ts'
import type { Config } from '../config/schema.ts'
import { systemClock } from '../core/clock.ts'
import { createLogger } from '../log.ts'
import { openTokenServices, type TokenServices } from '../services.ts'
import { ensureSecretFile } from './data-dir.ts'
import { devConfig } from './dev-config.ts'

/**
 * What `keys` and `tokens` commands work on: `--config FILE` (production), or `--data DIR` (dev,
 * default `.gatehouse/`), the same state the running gateway uses.
 */
export async function openState(values: {
  config?: string | undefined
  data?: string | undefined
}): Promise<TokenServices & { config: Config }> {
  let config: Config
  let baseDir: string
  if (values.config !== undefined) {
    ;({ config, baseDir } = loadConfigFile(values.config))
  } else {
    const dataDir = resolve(values.data ?? '.gatehouse')
    ensureSecretFile(dataDir, 'session-secret')
    ensureSecretFile(dataDir, 'client-secret')
    const originFile = resolve(dataDir, 'dev-origin')
    const port = existsSync(originFile) ? Number(new URL(readFileSync(originFile, 'utf8').trim()).port) : 8080
    config = devConfig({ dataDir, port, upstream: 'http://127.0.0.1:9' })
    baseDir = dataDir
  }
  // Commands log only warnings (a capped token is also printed as part of the answer).
  const services = await openTokenServices(config, { baseDir, clock: systemClock, log: createLogger('warn') })
  return { ...services, config }
}
