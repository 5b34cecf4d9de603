import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { providerList } from './providers.ts'
import type { Config } from './schema.ts'
import { ConfigError, validateConfig } from './validate.ts'

export { ConfigError, type ConfigProblem, validateConfig } from './validate.ts'

/** Reads and validates a YAML config file. */
export function loadConfigFile(file: string): { config: Config; baseDir: string } {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '(file)', message: `cannot read: ${(err as Error).message}` }])
  }
  return parseConfigText(text, file)
}

/** Parses and validates the YAML text of the config file `file` (a reload reads the file once, then hashes it). */
export function parseConfigText(text: string, file: string): { config: Config; baseDir: string } {
  let input: unknown
  try {
    input = parseYaml(text)
  } catch (err) {
    throw new ConfigError(file, [
      { path: '(yaml)', message: (err as Error).message.split('\n')[0] ?? 'invalid YAML' },
    ])
  }
  return { config: validateConfig(input, file), baseDir: dirname(resolve(file)) }
}

/** A provider's client secret or key, read from where the config says. */
export interface ProviderSecrets {
  clientSecret: string | undefined
  clientKey: string | undefined
}

/**
 * The session secrets and each provider's client secret or key (in `providerList` order), read from where
 * the config says; `clientSecret` and `clientKey` are the first provider's.
 */
export function resolveCoreSecrets(
  config: Pick<Config, 'session' | 'provider' | 'providers'>,
  baseDir: string,
  env = process.env,
): { session: string[]; providers: ProviderSecrets[] } & ProviderSecrets {
  const providers = providerList(config).map(({ path, config: p }): ProviderSecrets => {
    const { client_secret: secret, client_key: key } = p
    return {
      clientSecret: secret && resolveSecret(secret, `${path}.client_secret`, baseDir, env),
      clientKey:
        key &&
        resolveSecret(
          'env' in key ? { env: key.env } : { file: key.file },
          `${path}.client_key`,
          baseDir,
          env,
        ),
    }
  })
  return {
    session: config.session.secrets.map((ref, i) =>
      resolveSecret(ref, `session.secrets[${i}]`, baseDir, env),
    ),
    ...providers[0]!,
    providers,
  }
}

/** Reads a secret from its environment variable or file. Throws ConfigError naming the path, never the value. */
export function resolveSecret(
  ref: { env: string } | { file: string },
  path: string,
  baseDir: string,
  env = process.env,
): string {
  if ('env' in ref) {
    const v = env[ref.env]
    if (v === undefined || v === '')
      throw new ConfigError('config', [
        { path, message: `expected environment variable ${ref.env} to be set, got nothing` },
      ])
    return v
  }
  try {
    return readFileSync(resolve(baseDir, ref.file), 'utf8').trim()
  } catch (err) {
    throw new ConfigError('config', [
      {
        path,
        message: `cannot read secret file ${ref.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      },
    ])
  }
}
