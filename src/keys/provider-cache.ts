import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import * as oauth from 'oauth4webapi'
import type { Clock } from '../core/clock.ts'
import { ProviderResponseError, ProviderUnavailableError } from '../core/errors.ts'
import type { Logger } from '../core/ports.ts'
import type { CacheStore } from '../store/ports.ts'

export interface ProviderCacheOptions {
  issuer: string
  clock: Clock
  log: Logger
  /** Where last good copies are persisted (SQLite in data_dir), so a cold start during an outage still verifies. */
  store: CacheStore
  /** Every fetch gives up after this long. */
  timeoutMs: number
  /** A copy older than this is refreshed (in the background while it is still usable). Default 600 s. */
  refreshAfterSeconds?: number
  /** When refreshing fails, the last good copy is used up to this age, then refused. Default 3 days. */
  staleIfErrorSeconds?: number
  /** An unknown `kid` refetches the JWKS at most once per this. Default 30 s. */
  unknownKidCooldownSeconds?: number
  /**
   * After a failed refresh the copy is retried this long later, doubling each failure up to
   * `retryMaxSeconds`, with ±25 % jitter; the schedule runs on `clock`. Defaults 5 s and 300 s.
   */
  retryInitialSeconds?: number
  retryMaxSeconds?: number
  /** Jitter source, [0, 1). Default Math.random. */
  random?: () => number
  fetch?: typeof fetch
}

export interface CopyStatus {
  /** Seconds since the copy in use was fetched; undefined when there is none. */
  ageSeconds: number | undefined
  source: 'network' | 'persisted' | 'none'
}

export interface ProviderCacheStatus {
  metadata: CopyStatus
  jwks: CopyStatus
  /** The last refresh failed and an older copy is in use. */
  stale: boolean
  lastError: string | undefined
  /** JWKS fetches made for unknown kids (bounded by the cooldown). */
  unknownKidFetches: number
}

export interface ProviderCache {
  metadata(): Promise<oauth.AuthorizationServer>
  /** For jose's jwtVerify: the provider's keys, from memory. */
  getKey: JWTVerifyGetKey
  /**
   * Refresh whatever is older than refresh_after, or whose last refresh failed and whose retry is due
   * (called on a timer; failures keep the old copy).
   */
  refreshIfDue(): Promise<void>
  /**
   * Ask the provider now, whatever the retry schedule says, for every copy that is missing or whose last
   * refresh failed (sign-in: a stale copy is no reason to refuse once the provider is back). Throws
   * ProviderUnavailableError when discovery, or keys the cache has no copy of, cannot be had.
   */
  revalidate(): Promise<void>
  /** When the next retry of a failed refresh is due (ms since the epoch); undefined when none failed. */
  nextRetryAt(): number | undefined
  /** Fetch both now, whatever their age (at start: a persisted copy is revalidated at once). */
  refreshNow(): Promise<void>
  status(): ProviderCacheStatus
}

type Copy<T> = { value: T; fetchedAt: number; source: 'network' | 'persisted' }

/** The store keys the copies of one issuer are persisted under (read by the expiry inventory too). */
export function providerCacheKeys(issuer: string): { discovery: string; jwks: string } {
  const href = new URL(issuer).href
  return { discovery: `provider:discovery:${href}`, jwks: `provider:jwks:${href}` }
}

/**
 * The provider's discovery document and JWKS, kept in memory, refreshed before they age out, kept when
 * a refresh fails (stale-if-error, bounded), and persisted so that a process starting while the
 * provider is down verifies at once (seed 000: only warm instances survived the outage).
 */
export function createProviderCache(options: ProviderCacheOptions): ProviderCache {
  const { clock, log, store } = options
  const issuer = new URL(options.issuer)
  const insecure = issuer.protocol === 'http:'
  const fetchImpl = options.fetch ?? fetch
  const refreshAfter = options.refreshAfterSeconds ?? 600
  const staleIfError = options.staleIfErrorSeconds ?? 3 * 86_400
  const cooldown = options.unknownKidCooldownSeconds ?? 30
  const retryInitial = options.retryInitialSeconds ?? 5
  const retryMax = options.retryMaxSeconds ?? 300
  const random = options.random ?? Math.random
  const { discovery: metaKey, jwks: jwksKey } = providerCacheKeys(options.issuer)
  let meta: Copy<oauth.AuthorizationServer> | undefined
  let jwks: (Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey }) | undefined
  let lastError: string | undefined
  let lastUnknownKidFetch = Number.NEGATIVE_INFINITY
  let unknownKidFetches = 0
  const inFlight = new Map<string, Promise<unknown>>()
  // What failed to refresh, and when to try again: its copy (if any) is stale until a refresh succeeds.
  const backoff = new Map<string, { failedAt: number; until: number; delay: number }>()
  // A clock that stepped back past the failure does not postpone the retry.
  const waiting = (b: { failedAt: number; until: number }) => now() < b.until && now() >= b.failedAt
  // The store is read once per process for a copy it had none of (not on every tick of an outage).
  const persistedChecked = new Set<string>()
  const now = () => Math.floor(clock.now() / 1000)

  /** One fetch at a time per thing, whoever asks. */
  function single<T>(key: string, run: () => Promise<T>): Promise<T> {
    const pending = inFlight.get(key)
    if (pending !== undefined) return pending as Promise<T>
    const p = run().finally(() => inFlight.delete(key))
    inFlight.set(key, p)
    return p
  }

  const http = () => ({
    signal: AbortSignal.timeout(options.timeoutMs),
    [oauth.customFetch]: fetchImpl as never,
    [oauth.allowInsecureRequests]: insecure,
  })

  function unavailable(what: string, err: unknown): ProviderUnavailableError {
    const e = err as Error
    const message = e?.name === 'TimeoutError' ? 'timed out' : (e?.message ?? String(err))
    return err instanceof ProviderUnavailableError
      ? err
      : new ProviderUnavailableError(`${what}: ${message}`, { cause: err })
  }

  async function fetchMetadata(): Promise<Copy<oauth.AuthorizationServer>> {
    let value: oauth.AuthorizationServer
    try {
      const response = await oauth.discoveryRequest(issuer, http())
      if (response.status >= 500)
        throw new ProviderUnavailableError(`discovery: provider answered ${response.status}`)
      value = await oauth.processDiscoveryResponse(issuer, response)
    } catch (err) {
      throw unavailable('discovery', err)
    }
    const copy = { value, fetchedAt: now(), source: 'network' as const }
    await store.putCached(metaKey, JSON.stringify(value), copy.fetchedAt)
    return copy
  }

  function isJWKS(v: unknown): v is JSONWebKeySet {
    return typeof v === 'object' && v !== null && Array.isArray((v as { keys?: unknown }).keys)
  }

  async function fetchJWKS(jwksUri: string): Promise<Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey }> {
    let value: unknown
    try {
      const response = await fetchImpl(jwksUri, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(options.timeoutMs),
      })
      if (response.status !== 200)
        throw new ProviderUnavailableError(`JWKS: provider answered ${response.status}`)
      value = await response.json()
    } catch (err) {
      throw unavailable('JWKS', err)
    }
    if (!isJWKS(value)) throw new ProviderUnavailableError('JWKS: the answer is not a key set')
    const copy = { value, fetchedAt: now(), source: 'network' as const, getKey: createLocalJWKSet(value) }
    await store.putCached(jwksKey, JSON.stringify(value), copy.fetchedAt)
    return copy
  }

  async function loadPersisted<T>(key: string, check: (v: unknown) => v is T): Promise<Copy<T> | undefined> {
    const hit = await store.getCached(key)
    if (hit === undefined || now() - hit.fetchedAt > staleIfError) return undefined
    try {
      const value: unknown = JSON.parse(hit.value)
      return check(value) ? { value, fetchedAt: hit.fetchedAt, source: 'persisted' } : undefined
    } catch {
      return undefined
    }
  }

  // What was persisted was checked by oauth4webapi when it was fetched; here only its shape.
  const isMetadata = (v: unknown): v is oauth.AuthorizationServer =>
    typeof v === 'object' && v !== null && typeof (v as { issuer?: unknown }).issuer === 'string'

  /** The copy in use, refreshed if due; a failed refresh keeps a copy younger than stale_if_error. */
  async function current<T>(
    get: () => Copy<T> | undefined,
    set: (c: Copy<T>) => void,
    persisted: () => Promise<Copy<T> | undefined>,
    fetchFresh: () => Promise<Copy<T>>,
    what: string,
  ): Promise<Copy<T>> {
    let copy = get()
    if (copy === undefined && !persistedChecked.has(what)) {
      persistedChecked.add(what)
      const p = await persisted()
      if (p !== undefined) {
        set(p)
        copy = p
        log.info(
          { event: 'provider_cache_loaded', what, ageSeconds: now() - p.fetchedAt },
          'provider copy loaded from the store',
        )
      }
    }
    // A young copy whose last refresh failed (a start during an outage) is retried on the backoff
    // schedule, not only once it is refresh_after old.
    if (copy !== undefined && now() - copy.fetchedAt < refreshAfter && !backoff.has(what)) return copy
    const usable = copy !== undefined && now() - copy.fetchedAt <= staleIfError
    const wait = backoff.get(what)
    if (wait !== undefined && waiting(wait)) {
      // Failed a moment ago: do not ask again before the backoff is over, whoever is waiting.
      if (usable && copy !== undefined) return copy
      throw new ProviderUnavailableError(
        `${what}: ${lastError ?? 'unavailable'} (next try in ${wait.until - now()} s)`,
      )
    }
    if (usable && copy !== undefined) {
      // Due: refresh in the background, serve the copy we have meanwhile.
      void refresh(what, fetchFresh, set).catch(() => {})
      return copy
    }
    return refresh(what, fetchFresh, set)
  }

  async function refresh<T>(
    what: string,
    fetchFresh: () => Promise<Copy<T>>,
    set: (c: Copy<T>) => void,
  ): Promise<Copy<T>> {
    return single(what, async () => {
      try {
        const fresh = await fetchFresh()
        set(fresh)
        if (backoff.delete(what)) {
          log.info({ event: 'provider_recovered', what }, 'provider reachable again; copy refreshed')
        }
        if (backoff.size === 0) lastError = undefined
        return fresh
      } catch (err) {
        lastError = (err as Error).message
        // Exponential backoff with jitter: 5 s, 10 s, 20 s… up to 5 minutes.
        const prior = backoff.get(what)?.delay ?? 0
        const delay = Math.min(retryMax, prior === 0 ? retryInitial : prior * 2)
        const failedAt = now()
        backoff.set(what, { failedAt, until: failedAt + Math.ceil(delay * (0.75 + random() * 0.5)), delay })
        log.warn(
          { event: 'provider_refresh_failed', what, err: lastError },
          'provider refresh failed; keeping the last good copy',
        )
        throw err
      }
    })
  }

  async function metadata(): Promise<oauth.AuthorizationServer> {
    const copy = await current(
      () => meta,
      (c) => {
        meta = c
      },
      () => loadPersisted(metaKey, isMetadata),
      fetchMetadata,
      'discovery',
    )
    return copy.value
  }

  function setJWKS(c: Copy<JSONWebKeySet>): void {
    jwks =
      'getKey' in c
        ? (c as Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey })
        : { ...c, getKey: createLocalJWKSet(c.value) }
  }

  async function keySet(): Promise<Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey }> {
    const withGetter = (c: Copy<JSONWebKeySet>) =>
      'getKey' in c
        ? (c as Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey })
        : { ...c, getKey: createLocalJWKSet(c.value) }
    const copy = await current<JSONWebKeySet>(
      () => jwks,
      (c) => {
        jwks = withGetter(c)
      },
      () => loadPersisted(jwksKey, isJWKS),
      async () => fetchJWKS(await jwksUri()),
      'jwks',
    )
    return withGetter(copy)
  }

  async function jwksUri(): Promise<string> {
    const uri = (await metadata()).jwks_uri
    if (uri === undefined) throw new ProviderResponseError('discovery: no jwks_uri')
    return uri
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    const set = await keySet()
    try {
      return await set.getKey(header, token)
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_JWKS_NO_MATCHING_KEY') throw err
      // An unknown kid: the provider may have rotated. Refetch, but at most once per cooldown, so a
      // burst of unknown kids is not a burst of fetches.
      const t = now()
      if (t - lastUnknownKidFetch < cooldown) throw err
      lastUnknownKidFetch = t
      unknownKidFetches++
      const fresh = await refresh(
        'jwks',
        async () => fetchJWKS(await jwksUri()),
        (c) => {
          jwks = c as Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey }
        },
      ).catch(() => undefined)
      if (fresh === undefined) throw err
      return (fresh as Copy<JSONWebKeySet> & { getKey: JWTVerifyGetKey }).getKey(header, token)
    }
  }

  const status = (c: Copy<unknown> | undefined): CopyStatus => ({
    ageSeconds: c === undefined ? undefined : now() - c.fetchedAt,
    source: c?.source ?? 'none',
  })

  const fetchKeys = async () => fetchJWKS(await jwksUri())

  return {
    metadata,
    getKey,
    async refreshIfDue() {
      // One after the other: after an outage the breaker lets a single trial call through.
      await metadata()
      await inFlight.get('discovery')?.catch(() => {})
      await keySet()
      await inFlight.get('jwks')?.catch(() => {})
    },
    async revalidate() {
      if (meta === undefined || backoff.has('discovery')) {
        await refresh('discovery', fetchMetadata, (c) => {
          meta = c
        })
      }
      if (jwks === undefined || backoff.has('jwks')) {
        // The keys may still be had from the copy; only having none at all stops a sign-in.
        await refresh('jwks', fetchKeys, setJWKS).catch((err) => {
          if (jwks === undefined) throw err
        })
      }
    },
    nextRetryAt() {
      let next: number | undefined
      for (const b of backoff.values()) {
        const at = waiting(b) ? b.until : now()
        next = next === undefined ? at : Math.min(next, at)
      }
      return next === undefined ? undefined : next * 1000
    },
    async refreshNow() {
      // Load any persisted copies first, so a failure below leaves them in use.
      await metadata().catch(() => undefined)
      await keySet().catch(() => undefined)
      await refresh('discovery', fetchMetadata, (c) => {
        meta = c
      })
      await refresh('jwks', fetchKeys, setJWKS)
    },
    status: () => ({
      metadata: status(meta),
      jwks: status(jwks),
      stale: backoff.size > 0,
      lastError,
      unknownKidFetches,
    }),
  }
}
