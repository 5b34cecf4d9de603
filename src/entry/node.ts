/**
 * `gatehouse`: the Node gateway as a library. Load and validate a config file, then start the data
 * and admin ports; `gatehouse start` does exactly this.
 *
 * @example
 * import { loadConfigFile, startGateway } from 'gatehouse'
 * const { config, baseDir } = loadConfigFile('/etc/gatehouse/gatehouse.yaml')
 * const gateway = await startGateway(config, { baseDir })
 * process.on('SIGTERM', () => gateway.close())
 */
export { type Gateway, type GatewayOptions, startGateway } from '../app.ts'
export { loadConfigFile, resolveSecret } from '../config/load.ts'
export { GatehouseError } from '../core/errors.ts'
export * from './config.ts'
