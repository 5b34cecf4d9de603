import { createHash } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer as createNetServer, isIP } from 'node:net'
import { resolve as resolvePath } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { Gauge } from 'prom-client'
import { Agent } from 'undici'
import { createGatewayServer, type GatewayServer } from './adapters/node-proxy/server.ts'
import type { ServerLimits } from './adapters/node-proxy/server-limits.ts'
import { openTLSFiles, type TLSFiles } from './adapters/node-proxy/tls-files.ts'
import { createUpstream, type Upstream } from './adapters/node-proxy/upstream.ts'
import { createAdminServer } from './admin/admin-server.ts'
import { createMetrics, type Metrics } from './admin/metrics.ts'
import { createOffenders } from './admin/offenders.ts'
import { renderStatusPage, type StoreState } from './admin/status-page.ts'
import { allClaimHeadersOf, openApps, sharedSignInOf } from './apps.ts'
import { type AssembledProvider, type AssembleOptions, assembleCore, type KeptProvider } from './assemble.ts'
import { detectExpiryCliff, effectiveLifetimes } from './config/lifetimes.ts'
import { resolveCoreSecrets, resolveSecret } from './config/load.ts'
import { providerList } from './config/providers.ts'
import type { Config } from './config/schema.ts'
import { createSharedRefresh } from './coord/shared-refresh.ts'
import { type Clock, systemClock } from './core/clock.ts'
import type { Gatehouse } from './core/gatehouse.ts'
import { createMemoryOneTimeStore } from './core/one-time-store.ts'
import type { Logger, RateLimiter } from './core/ports.ts'
import { createExpiryMonitor, type ExpiryMonitor } from './expiry/monitor.ts'
import { createObservingConnector, createTLSObserver, providerCAs } from './expiry/tls.ts'
import type { ProviderCache } from './keys/provider-cache.ts'
import { createLogger } from './log.ts'
import type { OIDCClient } from './oidc/client.ts'
import type { GuardedFetch } from './oidc/guarded-fetch.ts'
import { createOverloadMonitor } from './protect/overload.ts'
import { createRateLimiter } from './protect/rate-limits.ts'
import { configHash, createConfigReloader, type ReloadResult, trackGenerations } from './reload.ts'
import { lifetimeConfig, openTokenServices, type TokenServices } from './services.ts'
import type { CacheStore, KeyStore, SessionRevocationStore, TokenStore } from './store/ports.ts'
import { createSharedRateLimiter, type SharedRateLimitsOptions } from './store/redis-rate-limits.ts'
import { TOKEN_PREFIX } from './tokens/token-service.ts'
import { startTracing } from './trace/start.ts'

export interface GatewayOptions {
  /** Directory relative paths in the config (secret files, data_dir) are resolved against. */
  baseDir: string
  clock?: Clock
  log?: Logger
  env?: NodeJS.ProcessEnv
  /** Paths served by something else on the same port (the embedded provider in dev). */
  mounts?: ReadonlyArray<{ prefix: string; handler: (req: IncomingMessage, res: ServerResponse) => void }>
  /** Listen on these instead of the config's (tests pass port 0). */
  listen?: { host: string; port: number }
  admin?: { host: string; port: number } | false
  /** Also accept connections on ::1 (dev: `localhost` may resolve to either). */
  alsoIPv6Loopback?: boolean
  fetch?: typeof fetch
  /** Storage for keys and tokens; default SQLite in data_dir. */
  store?: KeyStore & TokenStore & CacheStore & SessionRevocationStore
  /** Overload signal for load shedding; default the event-loop monitor (config `shedding`). */
  isOverloaded?: () => boolean
  /** How often revocations and keys are reloaded from the store. Default 5 s and 60 s. */
  refreshRevocationsMs?: number
  keyTickMs?: number
  /** How often the TLS files are checked for changes; default config `tls.reload_check`. */
  tlsReloadMs?: number
  /** Expiry inventory and alerts: how often (default config `alerts.check_every`), and the webhook's fetch. */
  expiryCheckMs?: number
  webhookFetch?: typeof fetch
  /** Probe TLS endpoints not seen in a handshake (default true). */
  probeTLS?: boolean
  /** The file the config came from: `reloadFromFile` reads it, `watchConfig` watches it (src/reload.ts). */
  configFile?: string
  /** sha256 of that file's text as loaded (`loadConfigForReload`); default: of the config's JSON. */
  configHash?: string
  /** Reload when `configFile` changes (debounced). Default false; `gatehouse start` turns it on. */
  watchConfig?: boolean
}

export interface Gateway {
  gatehouse: Gatehouse
  oidc: OIDCClient
  providerCache: ProviderCache
  providerGuard: GuardedFetch
  /** Every provider (a lone `provider` is `default`): its client, copies and breaker. */
  providers: readonly AssembledProvider[]
  services: TokenServices
  metrics: Metrics
  server: Server
  admin: Server | undefined
  /** `http://host:port` the data port listens on. */
  url: string
  adminUrl: string | undefined
  /** The credential inventory, its alerts and gauges (Gatehouse 5). */
  expiry: ExpiryMonitor
  /** Reload `tls.cert`/`tls.key` if they changed (also on a timer); true when new material is served. */
  reloadTLS(): boolean
  /**
   * Apply a validated config without a restart (docs/operations.md, "Reloading the config"): built
   * first, then swapped in for new requests; a config that cannot be applied keeps the running one.
   */
  reload(config: Config): Promise<ReloadResult>
  /** Read, validate and apply `configFile` (what SIGHUP does). */
  reloadFromFile(): Promise<ReloadResult>
  /** Exports the spans ended so far, when tracing is on (`telemetry.traces`). */
  flushTraces(): Promise<void>
  /** Drain in-flight requests (config `shutdown.drain`), then close everything. */
  close(): Promise<void>
}

/** A limit tripping is a security event (audit: rate-limit ban); client addresses are logged, credentials hashed. */
function rateLimitTripped(log: Logger) {
  return (bucket: string, key: string, retryAfterSeconds: number) => {
    const who =
      bucket === 'credential'
        ? { credential: createHash('sha256').update(key).digest('hex').slice(0, 16) }
        : { client: key }
    log.warn({ event: 'rate_limit_tripped', bucket, ...who, retryAfterSeconds }, 'rate limit tripped')
  }
}

function limitOf(l: false | { points: number; per: number }) {
  return l === false ? undefined : { points: l.points, perSeconds: l.per }
}

function serverLimits(s: Config['server']): ServerLimits {
  return {
    headersTimeoutMs: s.headers_timeout,
    requestTimeoutMs: s.request_timeout,
    keepAliveTimeoutMs: s.keep_alive_timeout,
    maxConnections: s.max_connections,
    maxConnectionsPerClient:
      s.max_connections_per_client === false ? undefined : s.max_connections_per_client,
  }
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      const address = server.address()
      resolveListen(typeof address === 'object' && address !== null ? address.port : port)
    })
  })
}

/**
 * Builds and starts a gateway from a validated config: the data port (proxy + /oauth2 endpoints)
 * and the admin port (health, readiness, metrics).
 */
export async function startGateway(config: Config, options: GatewayOptions): Promise<Gateway> {
  const clock = options.clock ?? systemClock
  const log = options.log ?? createLogger(config.log.level)
  const env = options.env ?? process.env
  const publicUrl = new URL(config.public_url)
  const tlsObserver = createTLSObserver()
  const nowSeconds = () => Math.floor(clock.now() / 1000)
  // Discovery, JWKS, token and revocation calls trust Node's roots, plus each provider's `ca` when set.
  const providerCA = providerCAs(config, options.baseDir)
  const providerAgent = new Agent({
    connect: createObservingConnector(tlsObserver, nowSeconds, { ca: providerCA }),
  })
  const tlsFiles: TLSFiles | undefined =
    config.tls === undefined
      ? undefined
      : openTLSFiles(
          resolvePath(options.baseDir, config.tls.cert),
          resolvePath(options.baseDir, config.tls.key),
        )
  const initialSecrets = resolveCoreSecrets(config, options.baseDir, env)
  const secrets = initialSecrets.session
  const metrics = createMetrics()
  // Set at start only: `telemetry` changes need a restart.
  const tracing = await startTracing(config.telemetry.traces, publicUrl, log)
  const services = await openTokenServices(config, {
    baseDir: options.baseDir,
    clock,
    log,
    env,
    store: options.store,
    onCapped: (cap) => metrics.tokensCapped.inc({ by: cap.by }),
    registry: metrics.registry,
    allowLocalCopy: true,
  })
  const redis = services.redis
  const limiterFor = (cfg: Config) =>
    (redis ? createSharedRateLimiter : createRateLimiter)({
      client: limitOf(cfg.rate_limits.client),
      credential: limitOf(cfg.rate_limits.credential),
      authEndpoint: limitOf(cfg.rate_limits.auth_endpoints),
      ...(redis ? { redis, onTripped: rateLimitTripped(services.log) } : {}),
    } as SharedRateLimitsOptions)
  /** What every core takes from the top-level config: the shared sign-in, and every app's claims. */
  const topLevelOf = (c: Config) => ({
    sharedSignIn: sharedSignInOf(c),
    otherClaimHeaders: c.apps === undefined ? undefined : allClaimHeadersOf(c),
  })
  // Used sign-in states outlive a config reload, so a reload cannot make one usable twice.
  const oneTime = createMemoryOneTimeStore(clock)
  // What a config reload builds again; the long-lived parts (services, stores, revocations) are shared.
  const buildCore = (
    config: Config,
    resolved: ReturnType<typeof resolveCoreSecrets>,
    keep: { limiter: RateLimiter; providers?: ReadonlyMap<string, KeptProvider> },
    /** Per app (its providers), or from the top-level config (shared sign-in, every app's claims). */
    extra: Pick<AssembleOptions, 'acceptProviders' | 'sharedSignIn' | 'otherClaimHeaders'> = {},
  ) =>
    assembleCore(config, {
      clock,
      // Sign-in and sign-out lines also go to the audit log.
      log: services.log,
      secrets: resolved,
      ...extra,
      keep: { oneTime, providers: keep.providers },
      cacheStore: services.store,
      sessionRevocations: services.sessions,
      // Calls to the provider record the certificate of each TLS handshake for the expiry inventory.
      fetch: ((f: typeof fetch) => tracing?.fetch(f) ?? f)(
        options.fetch ??
          ((input, init) => fetch(input, { ...init, dispatcher: providerAgent } as RequestInit)),
      ),
      // Gatehouse's own API tokens are told apart by their prefix and verified without the provider.
      bearer: (providerBearer) => ({
        verify: (token) =>
          token.startsWith(TOKEN_PREFIX) ? services.tokens.verify(token) : providerBearer.verify(token),
        forget: (token) =>
          token.startsWith(TOKEN_PREFIX) ? services.tokens.forget(token) : providerBearer.forget(token),
      }),
      jwks: () => services.keyRing.jwks(),
      signingKey: () => services.keyRing.signingKey(),
      limiter: keep.limiter,
      // Many instances: one provider refresh per session, whichever instance the requests land on.
      sharedRefresh: redis ? (refresh) => createSharedRefresh(refresh, { redis, log }) : undefined,
      repeatPenalty:
        config.rate_limits.repeat_penalty === false
          ? undefined
          : {
              after: config.rate_limits.repeat_penalty.after,
              maxDelayMs: config.rate_limits.repeat_penalty.max_delay_ms,
            },
    })
  let limiter = limiterFor(config)
  let {
    gatehouse,
    oidc,
    providerCache,
    providerGuard: guard,
    providers,
    securityHeaders,
  } = await buildCore(config, initialSecrets, { limiter }, topLevelOf(config))
  /** Each provider's copies and breaker, by name: what apps and an unchanged provider share. */
  const keptOf = (list: readonly AssembledProvider[]) =>
    new Map(list.map((p) => [p.name, { cache: p.cache, guard: p.guard }]))
  // Read at scrape time: how old each provider's copies in use are, and whether its breaker is open.
  new Gauge({
    name: 'gatehouse_provider_copy_age_seconds',
    help: "Age of the provider's discovery document and JWKS in use (-1 when there is none)",
    labelNames: ['provider', 'what'],
    registers: [metrics.registry],
    collect() {
      this.reset()
      for (const p of providers) {
        const st = p.cache.status()
        this.set({ provider: p.name, what: 'discovery' }, st.metadata.ageSeconds ?? -1)
        this.set({ provider: p.name, what: 'jwks' }, st.jwks.ageSeconds ?? -1)
      }
    },
  })
  new Gauge({
    name: 'gatehouse_provider_breaker_open',
    help: '1 while calls to the provider are suspended by the circuit breaker',
    labelNames: ['provider'],
    registers: [metrics.registry],
    collect() {
      this.reset()
      for (const p of providers) this.set({ provider: p.name }, p.guard.status().state === 'open' ? 1 : 0)
    },
  })
  // A config with one upstream: the single-app one, or an app's own (src/apps.ts).
  const openUpstream = (config: Config): Upstream =>
    createUpstream({
      url: config.upstream!,
      connectTimeoutMs: config.upstream_timeouts.connect * 1000,
      connector: createObservingConnector(tlsObserver, nowSeconds, {
        timeout: config.upstream_timeouts.connect * 1000,
      }),
      headersTimeoutMs: config.upstream_timeouts.headers * 1000,
      bodyTimeoutMs: config.upstream_timeouts.body * 1000,
    })
  // Config `apps`: a core per app sharing the long-lived parts, a pool per upstream (docs/apps.md).
  // With session.cookie_domain, the top-level core (at public_url) is where every app's users sign in.
  const openAppsOf = (
    config: Config,
    resolved: ReturnType<typeof resolveCoreSecrets>,
    keep: Parameters<typeof buildCore>[2],
    top: Gatehouse,
  ) =>
    config.apps === undefined
      ? undefined
      : openApps(config, {
          core: async (c, accept) =>
            (await buildCore(c, resolved, keep, { ...topLevelOf(config), acceptProviders: accept }))
              .gatehouse,
          upstream: openUpstream,
          log,
          signIn: config.session.cookie_domain === undefined ? undefined : top,
        })
  let apps = await openAppsOf(config, initialSecrets, { limiter, providers: keptOf(providers) }, gatehouse)
  let upstream = apps === undefined ? openUpstream(config) : apps.apps[0]!.upstream
  const offenders = createOffenders(() => clock.now())
  const webhook = config.alerts.webhook
  const expiry: ExpiryMonitor = createExpiryMonitor({
    config,
    clock,
    log,
    store: services.store,
    keyRing: services.keyRing,
    sessionSecrets: secrets,
    observer: tlsObserver,
    alertLock: services.alertLock,
    registry: metrics.registry,
    fetch: options.webhookFetch,
    probe: options.probeTLS,
    providerCA,
    webhook:
      webhook === undefined
        ? undefined
        : {
            url:
              typeof webhook === 'string'
                ? webhook
                : resolveSecret(webhook, 'alerts.webhook', options.baseDir, env),
            format: config.alerts.format,
          },
    ownTLS:
      tlsFiles === undefined
        ? undefined
        : () => ({ chain: tlsFiles.current().chain, where: `config tls.cert ${tlsFiles.certPath}` }),
  })
  // Always running, so that a reload can turn shedding on; `shedding: false` only stops it deciding.
  const overload = createOverloadMonitor(
    config.shedding === false
      ? { maxDelayMs: 200 }
      : { maxDelayMs: config.shedding.max_event_loop_delay_ms, maxInFlight: config.shedding.max_in_flight },
  )
  const gateway: GatewayServer = createGatewayServer({
    // Read once per request: a reload swaps them, a request in flight keeps those it started with.
    get gatehouse() {
      return gatehouse
    },
    get upstream() {
      return upstream
    },
    get securityHeaders() {
      return securityHeaders
    },
    publicUrl,
    metrics,
    log,
    mounts: options.mounts,
    onRefused: (code, address, ua) => offenders.record(code, address, ua),
    isOverloaded:
      options.isOverloaded ?? (() => reloader.config.shedding !== false && overload.isOverloaded()),
    inFlight: overload.inFlight,
    tls: tlsFiles === undefined ? undefined : { cert: tlsFiles.current().cert, key: tlsFiles.current().key },
    limits: serverLimits(config.server),
    allowedHosts: [...config.server.allowed_hosts, ...(apps?.hosts ?? [])],
    upstreamHost: config.server.upstream_host,
    tracing,
    get apps() {
      return apps?.route
    },
  })
  const generations = trackGenerations(gateway.server)
  // Upstream pools a reload replaced, closing once the last request that started on them has ended.
  const retiring = new Set<Promise<void>>()
  // A provider keeps its copies and breaker across a reload unless its own settings for them changed.
  const providerSettings = (c: Config) =>
    new Map(
      providerList(c).map((p) => [
        p.name,
        [p.config.issuer, p.config.timeout, p.config.breaker, p.config.cache],
      ]),
    )
  const reloader = createConfigReloader({
    initial: { config, hash: options.configHash ?? configHash(JSON.stringify(config)) },
    file: options.configFile,
    clock,
    log,
    registry: metrics.registry,
    async prepare(next, running) {
      const resolved = resolveCoreSecrets(next, options.baseDir, env)
      // Counters and breaker state carry over unless their own settings changed.
      const nextLimiter = isDeepStrictEqual(next.rate_limits, running.rate_limits)
        ? limiter
        : limiterFor(next)
      const before = providerSettings(running)
      const kept = new Map(
        [...providerSettings(next)]
          .filter(([name, settings]) => isDeepStrictEqual(settings, before.get(name)))
          .map(([name]) => [name, keptOf(providers).get(name)!]),
      )
      const core = await buildCore(
        next,
        resolved,
        { limiter: nextLimiter, providers: kept },
        topLevelOf(next),
      )
      // Apps are built again on every reload (their cores depend on top-level keys too), pools included.
      const nextApps = await openAppsOf(
        next,
        resolved,
        { limiter: nextLimiter, providers: keptOf(core.providers) },
        core.gatehouse,
      )
      const sameUpstream =
        nextApps === undefined &&
        next.upstream === running.upstream &&
        isDeepStrictEqual(next.upstream_timeouts, running.upstream_timeouts)
      const nextUpstream =
        nextApps !== undefined ? nextApps.apps[0]!.upstream : sameUpstream ? upstream : openUpstream(next)
      return () => {
        ;({ gatehouse, oidc, providerCache, providerGuard: guard, providers, securityHeaders } = core)
        limiter = nextLimiter
        if (options.log === undefined) (log as unknown as { level: string }).level = next.log.level
        if (next.shedding !== false)
          overload.setLimits({
            maxDelayMs: next.shedding.max_event_loop_delay_ms,
            maxInFlight: next.shedding.max_in_flight,
          })
        for (const p of core.providers) {
          if (kept.has(p.name)) continue
          p.cache
            .refreshNow()
            .catch((err) =>
              log.warn(
                { err: (err as Error).message, provider: p.name },
                'provider not reached after reload',
              ),
            )
        }
        if (!sameUpstream) {
          const old = apps ?? upstream
          upstream = nextUpstream
          apps = nextApps
          const closing = generations
            .next()
            .then(() => old.close())
            .catch(() => {})
            .finally(() => retiring.delete(closing))
          retiring.add(closing)
        }
      }
    },
  })
  const listenOn = options.listen ?? config.listen
  const port = await listen(gateway.server, listenOn.host, listenOn.port)
  let v6: ReturnType<typeof createNetServer> | undefined
  if (options.alsoIPv6Loopback) {
    // Same server, second address: `localhost` resolves to ::1 on some systems.
    v6 = createNetServer((socket) => gateway.server.emit('connection', socket))
    v6.on('error', () => {})
    v6.listen(port, '::1')
  }
  // What /status, /status.json and /readyz say about the shared state. Neither store being down makes
  // the instance unready: it keeps verifying (docs/operations.md), and says what it does instead.
  /** What the status page and /status.json say of a provider. */
  const providerState = (p: AssembledProvider) => {
    const cache = p.cache.status()
    return {
      name: p.name,
      issuer: p.issuer,
      state: cache.stale ? 'degraded' : cache.metadata.source === 'none' ? 'unknown' : 'ok',
      lastError: cache.lastError,
      breaker: p.guard.status(),
      discovery: cache.metadata,
      jwks: cache.jwks,
    }
  }
  const storeState = (): StoreState => ({
    durable: config.store.postgres === undefined ? 'sqlite' : 'postgres',
    durableState: services.storeConnected()
      ? 'ok'
      : 'not reached since start: serving from the local copy, writes refused',
    redis:
      services.redis === undefined
        ? 'off'
        : services.redis.isUp()
          ? 'up'
          : 'down: local rate limits, per-instance refresh, revocations by polling the store',
  })
  let admin: Server | undefined
  let adminUrl: string | undefined
  const adminListen = options.admin === undefined ? config.admin : options.admin
  if (adminListen !== false) {
    admin = createAdminServer({
      metrics,
      limits: serverLimits(config.server),
      // The name it listens on, when it is one, is a name it answers for.
      allowedHosts: [
        ...config.admin.allowed_hosts,
        ...(isIP(adminListen.host) === 0 ? [adminListen.host] : []),
      ],
      log,
      statusPage: async () => {
        const states = providers.map(providerState)
        return renderStatusPage({
          now: nowSeconds(),
          inventory: expiry.last(),
          warnSeconds: Math.max(...config.alerts.thresholds),
          thresholdsSeconds: config.alerts.thresholds,
          provider: states[0]!,
          providers: reloader.config.providers === undefined ? undefined : states,
          keys: services.keyRing.list(),
          store: storeState(),
          offenders: offenders.top(10),
          lifetimes: effectiveLifetimes(lifetimeConfig(reloader.config)),
          config: reloader.status(),
        })
      },
      status: async () => {
        const states = providers.map((p) => {
          const { lastError, ...state } = providerState(p)
          return {
            ...state,
            last_error: lastError ?? null,
            unknown_kid_fetches: p.cache.status().unknownKidFetches,
          }
        })
        return {
          // The first provider's (the only one's without a providers list), and with a list each by name.
          provider: states[0]!,
          ...(reloader.config.providers === undefined ? {} : { providers: states }),
          keys: services.keyRing.list(),
          store: storeState(),
          top_offenders: offenders.top(10),
          expiry: expiry.last()?.entries ?? null,
          config: ((c) => ({
            file: c.file ?? null,
            sha256: c.hash,
            loaded_at: new Date(c.loadedAt * 1000).toISOString(),
            restart_pending: c.restartPending,
          }))(reloader.status()),
        }
      },
      // Never calls the provider: a probe every few seconds must not become load on it. Existing
      // sessions and API tokens verify without the provider, so Gatehouse stays ready and says degraded.
      ready: async () => {
        const store = storeState()
        const shared = {
          store: store.durableState === 'ok' ? 'ok' : `degraded: ${store.durableState}`,
          redis:
            store.redis === 'down' || store.redis.startsWith('down')
              ? `degraded: ${store.redis}`
              : store.redis,
        }
        const checkOf = (p: AssembledProvider) => {
          const st = p.cache.status()
          if (!st.stale && st.metadata.source !== 'none') return 'ok'
          const copies = `discovery ${st.metadata.ageSeconds ?? 'none'} s old, keys ${st.jwks.ageSeconds ?? 'none'} s old`
          return `degraded: ${st.lastError ?? 'not reached yet'} (${copies})`
        }
        // With a providers list, one check each (`provider:<name>`): one down leaves the others signing in.
        const checks =
          reloader.config.providers === undefined
            ? { provider: checkOf(providers[0]!) }
            : Object.fromEntries(providers.map((p) => [`provider:${p.name}`, checkOf(p)]))
        return { ready: true, checks: { ...checks, ...shared } }
      },
    })
    const adminPort = await listen(admin, adminListen.host, adminListen.port)
    adminUrl = `http://${adminListen.host}:${adminPort}`
  }
  // Revocations made on any instance reach this one within a second (the timer below is the safety net).
  await redis?.subscribeRevoked(
    (entries) => services.tokens.markRevoked(entries),
    () => services.tokens.refreshRevocations(),
  )
  await redis?.subscribeSessionsRevoked(
    (entries) => services.sessions.markRevoked(entries),
    () => services.sessions.reload(),
  )
  // Warm (and persist) discovery and keys in the background; a failure leaves any persisted copy in use.
  for (const p of providers)
    p.cache
      .refreshNow()
      .catch((err) =>
        log.warn(
          { err: (err as Error).message, ...(config.providers ? { provider: p.name } : {}) },
          'provider not reached at start',
        ),
      )
  // Background work, none of it on the request path: revocations and keys from the store (another
  // process, such as `gatehouse tokens revoke`, may have changed them), and the expiry-cliff check.
  const timers: NodeJS.Timeout[] = []
  // A round still running when the next is due is not joined by another: a stuck store or provider
  // must not pile up one more waiting task (and connection) per interval.
  const every = (ms: number, what: string, task: () => Promise<unknown>) => {
    let running = false
    const t = setInterval(() => {
      if (running) return
      running = true
      task()
        .catch((err) => log.warn({ err: (err as Error).message }, `${what} failed`))
        .finally(() => {
          running = false
        })
    }, ms)
    t.unref()
    timers.push(t)
  }
  // Each provider on its own: one that is down delays nobody else's refresh.
  every(30_000, 'provider refresh', async () => {
    await Promise.all(providers.map((p) => p.cache.refreshIfDue().catch(() => {})))
  })
  // A failed refresh is retried on its backoff schedule (5 s, doubling, at most 5 min), read on the
  // clock; the refresh logs its own failure.
  every(1_000, 'provider retry', async () => {
    await Promise.all(
      providers.map(async (p) => {
        const due = p.cache.nextRetryAt()
        if (due !== undefined && due <= clock.now()) await p.cache.refreshIfDue().catch(() => {})
      }),
    )
  })
  every(options.refreshRevocationsMs ?? 5_000, 'revocation refresh', () =>
    services.tokens.refreshRevocations(),
  )
  every(options.refreshRevocationsMs ?? 5_000, 'session revocation reload', () => services.sessions.refresh())
  // Entries no session can outlive any more leave the store (any instance may do it; it is idempotent).
  every(3_600_000, 'session revocation prune', () =>
    services.store.pruneSessionRevocations(Math.floor(clock.now() / 1000)),
  )
  every(options.keyTickMs ?? 60_000, 'key rotation check', () => services.keyRing.tick())
  const { audit } = services
  const retention = config.audit.retention
  if (audit !== undefined && retention !== false) {
    every(3_600_000, 'audit retention', () => audit.prune(retention))
  }
  const reloadTLS = (): boolean => {
    if (tlsFiles === undefined) return false
    const fresh = tlsFiles.reloadIfChanged()
    if (fresh === undefined) return false
    gateway.setTLS({ cert: fresh.cert, key: fresh.key })
    log.info(
      { event: 'tls_reloaded', cert: tlsFiles.certPath, notAfter: fresh.chain[0]?.validTo },
      'TLS certificate reloaded',
    )
    return true
  }
  if (config.tls !== undefined) {
    every(options.tlsReloadMs ?? config.tls.reload_check * 1000, 'TLS reload', async () => reloadTLS())
  }
  every(options.expiryCheckMs ?? config.alerts.check_every * 1000, 'expiry check', () => expiry.run())
  void expiry.run().catch((err) => log.warn({ err: (err as Error).message }, 'expiry check failed'))
  const checkCliff = async () => {
    const live = await services.tokens.list(false)
    const cliff = detectExpiryCliff(
      live.filter((t) => t.revokedAt === undefined).map((t) => t.expiresAt),
      {
        now: Math.floor(clock.now() / 1000),
        windowSeconds: config.expiry_cliff.window,
        share: config.expiry_cliff.share,
        minCount: config.expiry_cliff.min_count,
      },
    )
    metrics.expiryCliff.set({ class: 'api_token' }, cliff.cliff ? 1 : 0)
    metrics.expiryCliffShare.set({ class: 'api_token' }, cliff.share ?? 0)
    if (cliff.cliff) {
      log.warn(
        { event: 'expiry_cliff', count: cliff.count, total: cliff.total, windowStart: cliff.windowStart },
        'many API tokens expire within the same window',
      )
    }
  }
  every(60_000, 'expiry cliff check', checkCliff)
  await checkCliff()
  log.info(
    {
      url: `${tlsFiles === undefined ? 'http' : 'https'}://${listenOn.host}:${port}`,
      public_url: publicUrl.origin,
      upstream: config.upstream,
      admin: adminUrl,
    },
    'gatehouse listening',
  )

  if (options.watchConfig) reloader.watch()

  return {
    get gatehouse() {
      return gatehouse
    },
    get oidc() {
      return oidc
    },
    get providerCache() {
      return providerCache
    },
    get providerGuard() {
      return guard
    },
    get providers() {
      return providers
    },
    services,
    metrics,
    server: gateway.server,
    admin,
    url: `${tlsFiles === undefined ? 'http' : 'https'}://${listenOn.host}:${port}`,
    adminUrl,
    expiry,
    reloadTLS,
    flushTraces: async () => tracing?.flush(),
    reload: (next) => reloader.reload(next),
    reloadFromFile: () => reloader.reloadFromFile(),
    async close() {
      for (const t of timers) clearInterval(t)
      reloader.close()
      overload.stop()
      await gateway.drain(reloader.config.shutdown.drain * 1000)
      await tracing?.shutdown()
      v6?.close()
      await (apps?.close() ?? upstream.close())
      await Promise.all(retiring)
      await providerAgent.close()
      await new Promise<void>((r) => (admin ? admin.close(() => r()) : r()))
      await services.close()
    },
  }
}

export { createLogger }
