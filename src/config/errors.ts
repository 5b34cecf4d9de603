/**
 * The config error, apart from the validator: code that runs at the edge (src/assemble.ts) throws it
 * without bundling zod and the schema.
 */
import { GatehouseError } from '../core/errors.ts'

/** One problem in a config file: where, what was expected, what was found. */
export interface ConfigProblem {
  path: string
  message: string
}

export class ConfigError extends GatehouseError {
  override readonly name = 'ConfigError'
  readonly problems: ConfigProblem[]
  constructor(file: string, problems: ConfigProblem[]) {
    super(
      'ERR_CONFIG',
      `${file}: ${problems.length} problem(s)\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`,
    )
    this.problems = problems
  }
}
