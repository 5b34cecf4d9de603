/**
 * Config `apps` in the Node gateway (docs/apps.md): one decision core per app, one upstream pool per
 * distinct upstream, and the router that picks the app of each request (src/core/apps.ts).
 */

import type { ProxyApp } from './adapters/node-proxy/server.ts'
import type { Upstream } from './adapters/node-proxy/upstream.ts'
import type { Config } from './config/schema.ts'
import { createAppRouter, createAppSelector } from './core/apps.ts'
import type { RequestFacts, Respond } from './core/decisions.ts'
import type { Gatehouse } from './core/gatehouse.ts'
import { claimHeadersOf } from './core/identity.ts'
import type { Logger } from './core/ports.ts'

type AppConfig = NonNullable<Config['apps']>[number]

/**
 * With `session.cookie_domain`: sign-in at public_url's origin for every app, and the origins it may send
 * a browser back to (public_url's and every app's).
 */
export function sharedSignInOf(
  config: Pick<Config, 'public_url' | 'session' | 'apps'>,
): { origin: string; returnOrigins: string[] } | undefined {
  if (config.session.cookie_domain === undefined) return undefined
  const origin = new URL(config.public_url).origin
  const apps = (config.apps ?? []).map((a) => appPublicUrl(config, a).origin)
  return { origin, returnOrigins: [...new Set([origin, ...apps])] }
}

/**
 * Every `headers_from_claims` pair (top level and every app's), as `[lower-case header, claim]`: each core
 * keeps all these claims in the sessions it signs in, so the app that did not sign the user in (another
 * prefix on the host, or any app with a shared cookie domain) still has its own; and drops clients'
 * copies of all these headers.
 */
export function allClaimHeadersOf(config: Pick<Config, 'identity' | 'apps'>): Array<[string, string]> {
  const maps = [
    config.identity.headers_from_claims,
    ...(config.apps ?? []).map((a) => a.identity.headers_from_claims ?? {}),
  ]
  const pairs = new Map<string, [string, string]>()
  for (const m of maps) for (const [h, c] of claimHeadersOf(m)) pairs.set(`${h}\u0000${c}`, [h, c])
  return [...pairs.values()]
}

/** An app's public URL: its host, with public_url's scheme and port. */
export function appPublicUrl(config: Pick<Config, 'public_url'>, app: Pick<AppConfig, 'host'>): URL {
  const url = new URL(config.public_url)
  url.hostname = app.host
  return url
}

/**
 * The config one app's core and upstream are built from: the whole config, with the app's public URL,
 * upstream, routes, and its identity and timeout keys over the top-level ones.
 */
export function appConfigOf(config: Config, app: AppConfig): Config {
  return {
    ...config,
    public_url: appPublicUrl(config, app).origin,
    upstream: app.upstream,
    apps: undefined,
    routes: app.routes,
    identity: {
      ...config.identity,
      pass_access_token: app.identity.pass_access_token ?? config.identity.pass_access_token,
      headers_from_claims: app.identity.headers_from_claims ?? config.identity.headers_from_claims,
      assertion: {
        ...config.identity.assertion,
        enabled: app.identity.assertion?.enabled ?? config.identity.assertion.enabled,
        audience: app.identity.assertion?.audience ?? config.identity.assertion.audience,
      },
    },
    upstream_timeouts: {
      connect: app.upstream_timeouts.connect ?? config.upstream_timeouts.connect,
      headers: app.upstream_timeouts.headers ?? config.upstream_timeouts.headers,
      body: app.upstream_timeouts.body ?? config.upstream_timeouts.body,
    },
  }
}

export interface OpenAppsOptions {
  /**
   * Builds an app's core from its config (`appConfigOf`), sharing the gateway's long-lived parts;
   * `providers`: the app's own list of accepted providers, when it has one.
   */
  core(config: Config, providers: readonly string[] | undefined): Promise<Gatehouse>
  /** Opens a pool to an app's upstream; called once per distinct upstream URL and timeouts. */
  upstream(config: Config): Upstream
  log: Logger
  /** Prefix of Gatehouse's own endpoints. Default `/oauth2`. */
  prefix?: string
  /**
   * With `session.cookie_domain`: what answers Gatehouse's own endpoints at public_url's host when no app
   * is there (the sign-in every app sends browsers to).
   */
  signIn?: Gatehouse | undefined
}

export interface OpenedApps {
  /** Which app a request is for, or the answer (421, 404, forward-auth 400/403): `GatewayServerOptions.apps`. */
  route(facts: RequestFacts): ProxyApp | Respond
  /** Every app host: names the data port answers for. */
  hosts: string[]
  apps: ProxyApp[]
  close(): Promise<void>
}

export async function openApps(config: Config, options: OpenAppsOptions): Promise<OpenedApps> {
  const list = config.apps ?? []
  const pools = new Map<string, Upstream>()
  const apps: ProxyApp[] = []
  const entries = []
  for (const app of list) {
    const appConfig = appConfigOf(config, app)
    const poolKey = JSON.stringify([appConfig.upstream, appConfig.upstream_timeouts])
    let upstream = pools.get(poolKey)
    if (upstream === undefined) {
      upstream = options.upstream(appConfig)
      pools.set(poolKey, upstream)
    }
    const served: ProxyApp = {
      name: app.name,
      gatehouse: await options.core(appConfig, app.providers),
      upstream,
      publicHost: new URL(appConfig.public_url).host,
      stripPrefix: app.strip_prefix && app.path_prefix !== '/' ? app.path_prefix : undefined,
    }
    apps.push(served)
    entries.push({ host: app.host, pathPrefix: app.path_prefix, app: served })
  }
  const publicHost = new URL(config.public_url).hostname
  const route = createAppRouter(createAppSelector(entries), {
    prefix: options.prefix ?? '/oauth2',
    log: options.log,
    signInHost:
      options.signIn === undefined || list.some((a) => a.host === publicHost)
        ? undefined
        : {
            host: publicHost,
            // Its core never passes a request upstream (it answers /oauth2 and the JWKS only).
            app: {
              name: 'sign-in',
              gatehouse: options.signIn,
              upstream: apps[0]!.upstream,
              publicHost: new URL(config.public_url).host,
            },
          },
  })
  return {
    route,
    hosts: [...new Set(list.map((a) => a.host))],
    apps,
    async close() {
      await Promise.all([...pools.values()].map((u) => u.close()))
    },
  }
}
