/**
 * What `gatehouse build-edge` bakes into each Lambda@Edge bundle. The edge has no environment
 * variables and no file system worth keeping, so config, secrets and the provider's last known good
 * discovery document and JWKS travel inside the code. Each function gets only what it uses.
 */

import type { AssembleConfig } from '../../assemble.ts'
import type { Logger } from '../../core/ports.ts'
import type { CacheStore } from '../../store/ports.ts'

/** The four functions that answer viewer requests through the decision core. */
export type CoreFunctionName = 'check-auth' | 'parse-auth' | 'refresh-auth' | 'sign-out'
export type EdgeFunctionName = CoreFunctionName | 'http-headers'

export const EDGE_FUNCTIONS: readonly EdgeFunctionName[] = Object.freeze([
  'check-auth',
  'parse-auth',
  'refresh-auth',
  'sign-out',
  'http-headers',
])

/** A copy of something fetched from the provider, as the provider cache keeps it. Times in seconds. */
export interface ProviderCopy {
  key: string
  value: string
  fetchedAt: number
}

export interface CoreBundle {
  function: CoreFunctionName
  /** Seconds since the epoch. */
  builtAt: number
  config: AssembleConfig
  secrets: {
    session: string[]
    /** Only parse-auth, refresh-auth and sign-out (revocation) hold it; check-auth never calls the token endpoint. */
    clientSecret?: string | undefined
  }
  /** The provider's discovery document and JWKS as of the build (or the data_dir's persisted copy). */
  provider: ProviderCopy[]
  logLevel: 'debug' | 'info' | 'warn' | 'error'
}

export interface HeadersBundle {
  function: 'http-headers'
  builtAt: number
  /** `[lower-case name, value]` pairs, computed at build time from `headers` in the config. */
  securityHeaders: ReadonlyArray<readonly [string, string]>
}

export type EdgeBundle = CoreBundle | HeadersBundle

/**
 * The baked copies behind the provider cache's store port. New copies fetched at the edge are kept
 * in memory for the life of the instance; nothing is written anywhere else.
 */
export function createBakedCacheStore(copies: readonly ProviderCopy[]): CacheStore {
  const entries = new Map(copies.map((c) => [c.key, { value: c.value, fetchedAt: c.fetchedAt }]))
  return {
    async getCached(key) {
      return entries.get(key)
    },
    async putCached(key, value, fetchedAt) {
      entries.set(key, { value, fetchedAt })
    },
  }
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const

/**
 * One JSON line per entry on the console (CloudWatch Logs, in the region nearest the viewer). The
 * core never logs a token, secret or cookie; neither does the adapter.
 */
export function createConsoleLogger(level: keyof typeof LEVELS, fields: Record<string, unknown>): Logger {
  const min = LEVELS[level]
  const write = (l: keyof typeof LEVELS) => (obj: object, msg?: string) => {
    if (LEVELS[l] < min) return
    console.log(JSON.stringify({ level: l, time: Date.now(), ...fields, ...obj, msg }))
  }
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') }
}
