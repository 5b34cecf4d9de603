/**
 * Builds the decision core and everything it talks to (session codec, provider cache behind the
 * breaker, OIDC client, bearer verifier, security headers) from a validated config. Shared by every
 * adapter; uses no Node API, so the fetch adapter can use it at the edge. Secrets arrive resolved.
 */

import { ConfigError } from './config/errors.ts'
import type { Config } from './config/schema.ts'
import { createAssertionSigner } from './core/assertion.ts'
import { type BearerVerifier, createBearerVerifier } from './core/bearer.ts'
import type { Clock } from './core/clock.ts'
import { createGatehouse, type Gatehouse } from './core/gatehouse.ts'
import { createSecurityHeaders, defaultSecurityHeaders } from './core/http-headers.ts'
import { claimHeadersOf } from './core/identity.ts'
import { createLogoutTokenVerifier } from './core/logout-token.ts'
import { createMemoryOneTimeStore } from './core/one-time-store.ts'
import type { Logger, OneTimeStore, RateLimiter, SessionRevocations } from './core/ports.ts'
import type { Access } from './core/route-policy.ts'
import { createSessionCodec, type SessionCodec } from './core/session-codec.ts'
import { createSessionRevocationList } from './core/session-revocations.ts'
import { createProviderCache, type ProviderCache } from './keys/provider-cache.ts'
import { createOIDCClient, importClientKey, type OIDCClient } from './oidc/client.ts'
import { createGuardedFetch, type GuardedFetch } from './oidc/guarded-fetch.ts'
import type { CacheStore } from './store/ports.ts'

/** The part of the config the core reads (the Lambda@Edge bundles bake only this). */
export type AssembleConfig = Pick<
  Config,
  | 'public_url'
  | 'provider'
  | 'session'
  | 'lifetimes'
  | 'sign_in'
  | 'sign_out'
  | 'routes'
  | 'identity'
  | 'headers'
  | 'keys'
>

export interface AssembleOptions {
  clock: Clock
  log: Logger
  /** `clientKey`: private_key_jwt's key as read (PEM or JWK text); imported here, so a bad key stops the start. */
  secrets: { session: string[]; clientSecret?: string | undefined; clientKey?: string | undefined }
  /** Where the provider's copies are kept (SQLite in the Node gateway, memory at the edge). */
  cacheStore: CacheStore
  fetch: typeof fetch
  /** Wraps the provider-token verifier, e.g. to route Gatehouse's own API tokens elsewhere. */
  bearer?: (providerBearer: BearerVerifier) => BearerVerifier
  jwks?: (() => { keys: Record<string, unknown>[] }) | undefined
  /**
   * The key that signs now (the key ring's), for identity.assertion; the Node gateway only (the fetch and
   * edge adapters hold no key ring, and refuse the setting).
   */
  signingKey?: (() => { kid: string; alg: string; key: CryptoKey }) | undefined
  /** Rate limits (the Node gateway: rate-limiter-flexible; at the edge the platform's own). */
  limiter?: RateLimiter | undefined
  /** Wraps the provider refresh, e.g. single-flight across instances through Redis. */
  sharedRefresh?: ((refresh: OIDCClient['refresh']) => OIDCClient['refresh']) | undefined
  /** See GatehouseOptions.repeatPenalty (config `rate_limits.repeat_penalty`); none when absent. */
  repeatPenalty?: { after: number; maxDelayMs: number } | undefined
  /** See GatehouseOptions.refreshMode; default `inline`. */
  refreshMode?: 'inline' | 'redirect' | undefined
  /**
   * Signed-out sessions, shared through the store (the Node gateway). Default: a list in this process
   * only (fetch and edge adapters, where a sign-out is refused by the instance that saw it).
   */
  sessionRevocations?: SessionRevocations | undefined
  /**
   * Parts a config reload keeps (src/reload.ts): the used sign-in states, and the provider's copies and
   * breaker when no setting of theirs changed. Default: new ones.
   */
  keep?: { oneTime?: OneTimeStore; provider?: { cache: ProviderCache; guard: GuardedFetch } } | undefined
}

export interface Assembled {
  gatehouse: Gatehouse
  oidc: OIDCClient
  codec: SessionCodec
  providerCache: ProviderCache
  providerGuard: GuardedFetch
  /** `[lower-case name, value]` pairs added to every response that lacks them. */
  securityHeaders: ReadonlyArray<readonly [string, string]>
}

function accessOf(allow: Config['routes'][number]['allow']): Access {
  if (allow === 'anonymous') return { kind: 'anonymous' }
  if (allow === 'authenticated') return { kind: 'authenticated' }
  return { kind: 'restricted', groups: allow.groups, emails: allow.emails, scopes: allow.scopes }
}

export async function assembleCore(config: AssembleConfig, options: AssembleOptions): Promise<Assembled> {
  const { clock, log } = options
  const publicUrl = new URL(config.public_url)
  const secure = publicUrl.protocol === 'https:'
  const cognito = config.provider.preset === 'cognito'
  const mapping = {
    userClaim: config.identity.user_claim,
    groupsClaim: config.identity.groups_claim ?? (cognito ? 'cognito:groups' : 'groups'),
    claimHeaders: claimHeadersOf(config.identity.headers_from_claims),
  }
  const assertion = config.identity.assertion
  const signingKey = options.signingKey
  if (assertion.enabled && signingKey === undefined) {
    throw new ConfigError('config', [
      {
        path: 'identity.assertion.enabled',
        message: "needs Gatehouse's signing keys: only the Node gateway (gatehouse start) sends assertions",
      },
    ])
  }
  const codec = await createSessionCodec({
    secrets: options.secrets.session,
    // RFC 6265bis §4.1.3.2: __Host- pins the cookie to this host, path / and Secure.
    cookieName: secure ? `__Host-${config.session.cookie_name}` : config.session.cookie_name,
    secure,
    clock,
  })
  // Every call to the provider goes through one breaker and bulkhead.
  const kept = options.keep?.provider
  const providerGuard =
    kept?.guard ??
    createGuardedFetch(options.fetch, {
      clock,
      maxInFlight: config.provider.breaker.max_in_flight,
      maxQueued: config.provider.breaker.max_queued,
      queueTimeoutMs: config.provider.breaker.queue_timeout * 1000,
      callTimeoutMs: config.provider.timeout * 1000,
      failureThreshold: config.provider.breaker.failures,
      openSeconds: config.provider.breaker.open_for,
    })
  const providerCache =
    kept?.cache ??
    createProviderCache({
      issuer: config.provider.issuer,
      clock,
      log,
      store: options.cacheStore,
      timeoutMs: config.provider.timeout * 1000,
      refreshAfterSeconds: config.provider.cache.refresh_after,
      staleIfErrorSeconds: config.provider.cache.stale_if_error,
      unknownKidCooldownSeconds: config.provider.cache.unknown_kid_cooldown,
      fetch: providerGuard.fetch,
    })
  const clientKey = config.provider.client_key
  const oidc = createOIDCClient({
    issuer: config.provider.issuer,
    clientId: config.provider.client_id,
    clientSecret: options.secrets.clientSecret,
    clientAuth: config.provider.client_auth,
    clientKey:
      clientKey === undefined || options.secrets.clientKey === undefined
        ? undefined
        : await importClientKey(options.secrets.clientKey, clientKey.alg),
    redirectUri: new URL('/oauth2/callback', publicUrl).href,
    scopes: config.provider.scopes,
    preset: config.provider.preset,
    endSessionUrl: config.provider.end_session_url,
    logoutIdTokenHint: config.provider.logout_id_token_hint,
    algorithms: config.provider.algorithms,
    timeoutMs: config.provider.timeout * 1000,
    clock,
    fetch: providerGuard.fetch,
    cache: providerCache,
  })
  const providerBearer = createBearerVerifier(
    {
      issuer: config.provider.issuer,
      audiences: config.provider.audiences ?? [config.provider.client_id],
      audienceClaim: cognito ? 'client_id' : 'aud',
      algorithms: config.provider.algorithms,
      leewaySeconds: config.provider.leeway,
      mapping,
      clock,
      requiredClaims: cognito ? { token_use: 'access' } : undefined,
      accessTokenTyp: config.provider.access_token_typ,
      log,
      // Cognito compares its client_id claim, which every Cognito access token carries.
      idTokenAudience:
        config.provider.audiences === undefined && !cognito ? config.provider.client_id : undefined,
    },
    providerCache.getKey,
  )
  const gatehouse = createGatehouse(
    {
      publicUrl: publicUrl.origin,
      routes: config.routes.map((r) => ({
        path: r.path,
        methods: r.methods,
        access: accessOf(r.allow),
        caseInsensitive: r.case_insensitive,
      })),
      session: {
        ttlSeconds: config.lifetimes.session.ttl,
        maxTtlSeconds: config.lifetimes.session.max_ttl,
        refreshBeforeSeconds: config.session.refresh_before,
        outageGraceSeconds: config.provider.outage_grace,
      },
      signInTtlSeconds: config.sign_in.ttl,
      mapping,
      passAccessToken: config.identity.pass_access_token,
      signOutRedirectPath: config.sign_out.redirect,
      refreshMode: options.refreshMode ?? 'inline',
      repeatPenalty: options.repeatPenalty,
      providerIssuer: config.provider.issuer,
      assertion: assertion.enabled ? { audience: assertion.audience ?? publicUrl.origin } : undefined,
    },
    {
      clock,
      oidc: options.sharedRefresh ? { ...oidc, refresh: options.sharedRefresh(oidc.refresh) } : oidc,
      codec,
      oneTime: options.keep?.oneTime ?? createMemoryOneTimeStore(clock),
      bearer: options.bearer ? options.bearer(providerBearer) : providerBearer,
      log,
      jwks: options.jwks,
      assertionSigner:
        assertion.enabled && signingKey !== undefined
          ? createAssertionSigner({ issuer: publicUrl.origin, ttlSeconds: assertion.ttl, clock, signingKey })
          : undefined,
      limiter: options.limiter,
      logoutToken: createLogoutTokenVerifier(
        {
          issuer: config.provider.issuer,
          clientId: config.provider.client_id,
          algorithms: config.provider.algorithms,
          leewaySeconds: config.provider.leeway,
          clock,
        },
        providerCache.getKey,
      ),
      sessionRevocations:
        options.sessionRevocations ??
        createSessionRevocationList({ clock, log, maxTtlSeconds: config.lifetimes.session.max_ttl }),
      // Verifiers must see a new key before it signs: cache for at most a quarter of the publish-ahead time.
      jwksMaxAgeSeconds: Math.max(60, Math.min(3600, Math.floor(config.keys.publish_ahead / 4))),
    },
  )
  const h = config.headers
  const securityHeaders = createSecurityHeaders(
    {
      hsts:
        h.hsts === false
          ? false
          : h.hsts === undefined
            ? defaultSecurityHeaders.hsts
            : {
                maxAgeSeconds: h.hsts.max_age,
                includeSubDomains: h.hsts.include_subdomains,
                preload: h.hsts.preload,
              },
      contentSecurityPolicy: h.content_security_policy ?? defaultSecurityHeaders.contentSecurityPolicy,
      frameOptions: h.frame_options ?? defaultSecurityHeaders.frameOptions,
      referrerPolicy: h.referrer_policy ?? defaultSecurityHeaders.referrerPolicy,
      contentTypeOptions: h.content_type_options ?? defaultSecurityHeaders.contentTypeOptions,
    },
    secure,
  )
  return { gatehouse, oidc, codec, providerCache, providerGuard, securityHeaders }
}
