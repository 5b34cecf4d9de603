import { json, problem, type RequestFacts, type Respond } from './decisions.ts'
import type { Logger } from './ports.ts'
import { matchingPath, normalizePath } from './route-policy.ts'

/**
 * Several apps behind one gateway (config `apps`): which app a request is for, by its host name and
 * the longest path prefix that matches it segment by segment. Pure; the Node proxy hands the request
 * to the chosen app's decision core and upstream.
 */

/** One app as the router sees it: where it is served, and whatever the adapter needs to serve it. */
export interface AppEntry<T> {
  /** Lower-case host name, no port. */
  host: string
  /** A normalised prefix (see `normalizePathPrefix`): `/` or `/a/b`, never a trailing `/`. */
  pathPrefix: string
  app: T
}

/**
 * A path prefix as written in the config, normalised: `/grafana/` is `/grafana`. A prefix is a path a
 * request must begin with segment by segment, so it has no dot segments, escapes, query or empty
 * segment; those are refused with the reason rather than guessed at.
 */
export function normalizePathPrefix(raw: string): { prefix: string } | { problem: string } {
  if (!raw.startsWith('/')) return { problem: `expected a path starting with /, got ${JSON.stringify(raw)}` }
  if (raw === '/') return { prefix: '/' }
  const trimmed = raw.endsWith('/') ? raw.slice(0, -1) : raw
  const segments = trimmed.slice(1).split('/')
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..' || !/^[A-Za-z0-9._~!$&'()*+,;=:@-]+$/.test(s)) {
      return {
        problem: `expected a path of plain segments such as /grafana or /tools/grafana (no empty or dot segment, escape, query or fragment), got ${JSON.stringify(raw)}`,
      }
    }
  }
  return { prefix: trimmed }
}

/** Whether `pathname` (normalised) is `prefix` or under it: `/grafana` matches `/grafana/x`, never `/grafanax`. */
export function underPrefix(prefix: string, pathname: string): boolean {
  if (prefix === '/') return true
  return (
    pathname.startsWith(prefix) &&
    (pathname.length === prefix.length || pathname.charCodeAt(prefix.length) === 0x2f)
  )
}

// RFC 9110 §7.2: uri-host [ ":" port ]. Apps are named by host names, so an IP literal matches none.
const HOST = /^([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\.?(?::\d{1,5})?$/

/** The host name of a `Host` (or `X-Forwarded-Host`) value: lower-case, without port or trailing dot. */
export function appHostOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const m = HOST.exec(value)
  return m === null ? undefined : m[1]!.toLowerCase()
}

export interface AppSelector<T> {
  /** The app serving `pathname` (normalised) on `host` (a Host header value), by the longest prefix. */
  select(host: string | undefined, pathname: string): T | undefined
  /** The app answering Gatehouse's own endpoints on `host`: the one at `/`, else the first listed. */
  ownerOf(host: string | undefined): T | undefined
}

/**
 * @example
 * ```ts
 * const apps = createAppSelector([
 *   { host: 'tools.example.com', pathPrefix: '/', app: 'home' },
 *   { host: 'tools.example.com', pathPrefix: '/grafana', app: 'grafana' },
 * ])
 * apps.select('tools.example.com', '/grafana/d/1') // 'grafana'
 * apps.select('tools.example.com', '/grafanax') // 'home'
 * ```
 */
export function createAppSelector<T>(entries: readonly AppEntry<T>[]): AppSelector<T> {
  const byHost = new Map<string, Array<AppEntry<T>>>()
  for (const e of entries) {
    const list = byHost.get(e.host) ?? []
    if (list.some((other) => other.pathPrefix === e.pathPrefix)) {
      throw new TypeError(`apps: two apps at ${e.host}${e.pathPrefix === '/' ? '' : e.pathPrefix}`)
    }
    list.push(e)
    byHost.set(e.host, list)
  }
  const owners = new Map<string, T>()
  for (const [host, list] of byHost)
    owners.set(host, (list.find((e) => e.pathPrefix === '/') ?? list[0]!).app)
  // Longest prefix first: the first that matches wins.
  for (const list of byHost.values()) list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length)
  return {
    select(host, pathname) {
      const name = appHostOf(host)
      const list = name === undefined ? undefined : byHost.get(name)
      if (list === undefined) return undefined
      for (const e of list) if (underPrefix(e.pathPrefix, pathname)) return e.app
      return undefined
    },
    ownerOf(host) {
      const name = appHostOf(host)
      return name === undefined ? undefined : owners.get(name)
    },
  }
}

const JWKS_PATH = '/.well-known/jwks.json'

export interface AppRouterOptions<T> {
  /** Prefix of Gatehouse's own endpoints (`/oauth2`); `<prefix>/auth` is forward-auth. */
  prefix: string
  log: Logger
  /**
   * With a shared cookie domain: the host where sign-in happens (public_url's) when no app is at it. It
   * answers Gatehouse's own endpoints only; any other path there is 404 `no_app`.
   */
  signInHost?: { host: string; app: T } | undefined
}

/**
 * Chooses the app for a request, or answers it: by `Host` and the normalised path, or on the
 * forward-auth endpoint by `X-Forwarded-Host` and the original URI (the proxy calling it names the
 * app; its own Host is Gatehouse's). Gatehouse's own endpoints on a host belong to that host's owner
 * app (`ownerOf`). A host or path no app serves is answered, never judged by another app's policy.
 */
export function createAppRouter<T>(
  selector: AppSelector<T>,
  options: AppRouterOptions<T>,
): (facts: RequestFacts) => T | Respond {
  const { log } = options
  const signInHost = options.signInHost
  const ownerOf = (host: string | undefined): T | undefined =>
    selector.ownerOf(host) ??
    (signInHost !== undefined && appHostOf(host) === signInHost.host ? signInHost.app : undefined)
  const ownPrefix = `${options.prefix}/`
  const authPath = `${options.prefix}/auth`

  function misdirected(facts: RequestFacts, host: string | undefined): Respond {
    log.info(
      { code: 'misdirected_request', host: host?.slice(0, 100) },
      'request refused: no app at this host',
    )
    return problem(
      facts,
      421,
      'misdirected_request',
      'Misdirected request',
      'This server does not answer for that host name.',
    )
  }

  return function routeToApp(facts) {
    const host = facts.header('host')
    const target = normalizePath(facts.url)
    // A path no app can judge: the host's owner answers it (400 bad_path).
    if (target === undefined) return ownerOf(host) ?? misdirected(facts, host)
    const { pathname } = target
    if (pathname === authPath) {
      const forwardedHost = facts.header('x-forwarded-host')
      if (forwardedHost === undefined) {
        log.info({ code: 'missing_forwarded_host' }, 'forward-auth check refused: no X-Forwarded-Host')
        return json(400, 'missing_forwarded_host', {
          error: 'missing_forwarded_host',
          error_description: 'Send the original host in X-Forwarded-Host: it names the app to judge for',
        })
      }
      // The app's core checks the URI itself (400 when missing, conflicting or invalid).
      const uri = facts.header('x-forwarded-uri') ?? facts.header('x-original-uri')
      const forwardedPath = (uri === undefined ? undefined : normalizePath(uri))?.pathname ?? '/'
      const app = selector.select(forwardedHost, matchingPath(forwardedPath))
      if (app !== undefined) return app
      log.info(
        { code: 'unknown_app', host: forwardedHost.slice(0, 100) },
        'forward-auth check refused: no app at this host and path',
      )
      return json(403, 'unknown_app', {
        error: 'unknown_app',
        error_description: 'No app is configured at the X-Forwarded-Host and URI',
      })
    }
    if (pathname.startsWith(ownPrefix) || pathname === JWKS_PATH)
      return ownerOf(host) ?? misdirected(facts, host)
    // Chosen on the form rules match (`/ops;x/y` and `/ops./y` are `/ops/y`), so a path an upstream
    // reads as under a prefix is judged by that prefix's app.
    const app = selector.select(host, matchingPath(pathname))
    if (app !== undefined) return app
    if (ownerOf(host) === undefined) return misdirected(facts, host)
    log.info({ code: 'no_app' }, 'request refused: no app at this path')
    return problem(facts, 404, 'no_app', 'Not found', 'No app is served at this address.')
  }
}
