import { parseArgs } from 'node:util'
import { startGateway } from '../app.ts'
import { ConfigError } from '../config/load.ts'
import { loadConfigForReload } from '../reload.ts'
import { installShutdown } from './shutdown.ts'

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    // --no-watch: reload on SIGHUP only, e.g. when whatever writes the file writes it in several steps.
    options: { config: { type: 'string', short: 'c' }, watch: { type: 'boolean', default: true } },
    allowNegative: true,
  })
  if (values.config === undefined) {
    process.stderr.write('gatehouse start: --config FILE is required\n')
    return 1
  }
  let loaded: ReturnType<typeof loadConfigForReload>
  try {
    loaded = loadConfigForReload(values.config)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
  // The file is reloaded when it changes and on SIGHUP (docs/operations.md, "Reloading the config").
  const gateway = await startGateway(loaded.config, {
    baseDir: loaded.baseDir,
    configFile: values.config,
    configHash: loaded.hash,
    watchConfig: values.watch,
  })
  // A refused reload is logged and counted by the gateway, which keeps serving the running config.
  process.on('SIGHUP', () => void gateway.reloadFromFile().catch(() => {}))
  installShutdown(() => gateway.close())
  return 0
}
