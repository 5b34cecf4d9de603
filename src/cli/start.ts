import { parseArgs } from 'node:util'
import { startGateway } from '../app.ts'
import { ConfigError, loadConfigFile } from '../config/load.ts'
import { installShutdown } from './shutdown.ts'

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } })
  if (values.config === undefined) {
    process.stderr.write('gatehouse start: --config FILE is required\n')
    return 1
  }
  let loaded: ReturnType<typeof loadConfigFile>
  try {
    loaded = loadConfigFile(values.config)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
  const gateway = await startGateway(loaded.config, { baseDir: loaded.baseDir })
  installShutdown(() => gateway.close())
  return 0
}
