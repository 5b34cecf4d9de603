import { validateConfig } from '../config/load.ts'

export const CLIENT_ID = 'gatehouse-dev'

/** The lifetimes of `gatehouse dev` (also a sound starting point for a production config). */
export const DEV_LIFETIMES = Object.freeze({
  session: { ttl: '12h', max_ttl: '7d' },
  refresh: { ttl: '7d', max_ttl: '30d' },
  api_token: { ttl: '30d', max_ttl: '90d' },
  derived_token: { ttl: '1h', max_ttl: '1d' },
  signing_key: { ttl: '30d', max_ttl: '180d' },
})

/** The config `gatehouse dev` runs with: everything in the data dir, secrets generated there. */
export function devConfig(options: {
  dataDir: string
  port: number
  upstream: string
  logLevel?: string | undefined
}) {
  const origin = `http://localhost:${options.port}`
  return validateConfig(
    {
      public_url: origin,
      upstream: options.upstream,
      data_dir: options.dataDir,
      listen: { host: '127.0.0.1', port: options.port },
      provider: {
        issuer: `${origin}/_idp`,
        client_id: CLIENT_ID,
        client_secret: { file: 'client-secret' },
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
      },
      session: { secrets: [{ file: 'session-secret' }], refresh_before: '10m' },
      lifetimes: DEV_LIFETIMES,
      shutdown: { drain: '5s' },
      log: { level: options.logLevel ?? 'info' },
    },
    'gatehouse dev',
  )
}
