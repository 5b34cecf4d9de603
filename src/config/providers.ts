/**
 * The providers of a config (docs/providers.md): `provider` alone, or the entries of `providers`. No Node
 * API: the edge adapters read configs too.
 */
import type { Config, ProviderConfig } from './schema.ts'

export interface NamedProvider {
  /** The entry's name; `default` for a lone `provider`, which sessions do not record. */
  name: string
  /** What the sign-in chooser shows. */
  title: string
  /** Where its keys are in the config file, for messages: `provider` or `providers[1]`. */
  path: string
  config: ProviderConfig
}

/** Every provider in the config's order; a lone `provider` is one called `default`. */
export function providerList(config: Pick<Config, 'provider' | 'providers'>): NamedProvider[] {
  if (config.providers === undefined)
    return [{ name: 'default', title: 'default', path: 'provider', config: config.provider }]
  return config.providers.map((p, i) => ({
    name: p.name,
    title: p.title ?? p.name,
    path: `providers[${i}]`,
    config: p,
  }))
}

/** True with a `providers` list: sessions record their provider, and each has its own callback path. */
export function hasProviderList(config: Pick<Config, 'providers'>): boolean {
  return config.providers !== undefined
}
