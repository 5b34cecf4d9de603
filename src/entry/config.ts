/**
 * `gatehouse/config`: config validation with no Node API, for every runtime (the fetch handler and
 * Lambda@Edge validate with it too). Reading a YAML file is `loadConfigFile` from `gatehouse`.
 *
 * @example
 * import { validateConfig } from 'gatehouse/config'
 * const config = validateConfig(JSON.parse(text)) // throws ConfigError listing every problem
 */
export { type Config, type ConfigInput, configSchema } from '../config/schema.ts'
export { ConfigError, type ConfigProblem, validateConfig } from '../config/validate.ts'
