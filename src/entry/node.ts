/**
 * `gatehouse`: the Node gateway as a library. Load and validate a config file, then start the data
 * and admin ports, reloading the file when it changes or on SIGHUP; `gatehouse start` does exactly this.
 *
 * @example
 * import { loadConfigForReload, startGateway } from 'gatehouse'
 * const file = '/etc/gatehouse/gatehouse.yaml'
 * const { config, baseDir, hash } = loadConfigForReload(file)
 * const gateway = await startGateway(config, {
 *   baseDir, configFile: file, configHash: hash, watchConfig: true,
 * })
 * process.on('SIGHUP', () => void gateway.reloadFromFile())
 * process.on('SIGTERM', () => gateway.close())
 */
export { type Gateway, type GatewayOptions, startGateway } from '../app.ts'
export { loadConfigFile, resolveSecret } from '../config/load.ts'
export { GatehouseError } from '../core/errors.ts'
export { loadConfigForReload, type ReloadResult } from '../reload.ts'
export * from './config.ts'
