/**
 * Builds the decision core and everything it talks to (session codec, provider cache behind the
 * breaker, OIDC client, bearer verifier, security headers) from a validated config. Shared by every
 * adapter; uses no Node API, so the fetch adapter can use it at the edge. Secrets arrive resolved.
 */

import { ConfigError } from './config/errors.ts'
import { providerList } from './config/providers.ts'
import type { Config } from './config/schema.ts'
import { createAssertionSigner } from './core/assertion.ts'
import { type BearerVerifier, createBearerByIssuer, createBearerVerifier } from './core/bearer.ts'
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
  | 'providers'
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
  /**
   * `clientKey`: private_key_jwt's key as read (PEM or JWK text); imported here, so a bad key stops the
   * start. `providers`: each provider's, in `providerList` order (`clientSecret`/`clientKey` are the first's).
   */
  secrets: {
    session: string[]
    clientSecret?: string | undefined
    clientKey?: string | undefined
    providers?:
      | ReadonlyArray<{ clientSecret?: string | undefined; clientKey?: string | undefined }>
      | undefined
  }
  /** With a providers list: the names this core (an app's) accepts and offers; default every one. */
  acceptProviders?: readonly string[] | undefined
  /**
   * With `session.cookie_domain`: where sign-in happens (public_url's origin, which an app's config no
   * longer has) and the origins a browser may be sent back to (every app's). See GatehouseOptions.
   */
  sharedSignIn?: { origin: string; returnOrigins: readonly string[] } | undefined
  /** With apps: every app's claim headers (see GatehouseOptions.otherClaimHeaders). */
  otherClaimHeaders?: ReadonlyArray<readonly [string, string]> | undefined
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
  keep?:
    | {
        oneTime?: OneTimeStore
        /** By provider name (`default` for a lone provider). */
        providers?: ReadonlyMap<string, KeptProvider> | undefined
      }
    | undefined
}

/** A provider's copies and breaker: what a config reload (or an app's core) can share. */
export interface KeptProvider {
  cache: ProviderCache
  guard: GuardedFetch
}

/** One provider as assembled: its client, copies, breaker. */
export interface AssembledProvider extends KeptProvider {
  /** `default` for a lone provider. */
  name: string
  title: string
  issuer: string
  oidc: OIDCClient
}

export interface Assembled {
  gatehouse: Gatehouse
  /** The first provider's (the only one's, without a providers list). */
  oidc: OIDCClient
  codec: SessionCodec
  providerCache: ProviderCache
  providerGuard: GuardedFetch
  /** Every provider, in the config's order. */
  providers: AssembledProvider[]
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
  const mappingOf = (cognitoPreset: boolean) => ({
    userClaim: config.identity.user_claim,
    groupsClaim: config.identity.groups_claim ?? (cognitoPreset ? 'cognito:groups' : 'groups'),
    claimHeaders: claimHeadersOf(config.identity.headers_from_claims),
  })
  const mapping = mappingOf(cognito)
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
  const domain = config.session.cookie_domain
  const codec = await createSessionCodec({
    secrets: options.secrets.session,
    // RFC 6265bis §4.1.3.2: __Host- pins the cookie to this host, path / and Secure; a cookie for a whole
    // domain (session.cookie_domain) can only be __Secure-.
    cookieName: secure
      ? `${domain === undefined ? '__Host-' : '__Secure-'}${config.session.cookie_name}`
      : config.session.cookie_name,
    secure,
    domain,
    clock,
  })
  // Each provider has its own breaker and bulkhead, copies, client and verifiers: one down leaves the
  // others as they are (docs/providers.md).
  const listed = config.providers !== undefined
  const providers: Array<
    AssembledProvider & {
      bearer: BearerVerifier
      logoutToken: ReturnType<typeof createLogoutTokenVerifier>
      outageGraceSeconds: number
      mapping: ReturnType<typeof mappingOf>
    }
  > = []
  for (const [i, { name, title, config: p }] of providerList(config).entries()) {
    const secrets =
      i === 0 ? (options.secrets.providers?.[0] ?? options.secrets) : options.secrets.providers?.[i]
    const kept = options.keep?.providers?.get(name)
    const guard =
      kept?.guard ??
      createGuardedFetch(options.fetch, {
        clock,
        maxInFlight: p.breaker.max_in_flight,
        maxQueued: p.breaker.max_queued,
        queueTimeoutMs: p.breaker.queue_timeout * 1000,
        callTimeoutMs: p.timeout * 1000,
        failureThreshold: p.breaker.failures,
        openSeconds: p.breaker.open_for,
      })
    const cache =
      kept?.cache ??
      createProviderCache({
        issuer: p.issuer,
        clock,
        log,
        store: options.cacheStore,
        timeoutMs: p.timeout * 1000,
        refreshAfterSeconds: p.cache.refresh_after,
        staleIfErrorSeconds: p.cache.stale_if_error,
        unknownKidCooldownSeconds: p.cache.unknown_kid_cooldown,
        fetch: guard.fetch,
      })
    const cognito = p.preset === 'cognito'
    const clientKey = p.client_key
    const oidc = createOIDCClient({
      issuer: p.issuer,
      clientId: p.client_id,
      clientSecret: secrets?.clientSecret,
      clientAuth: p.client_auth,
      clientKey:
        clientKey === undefined || secrets?.clientKey === undefined
          ? undefined
          : await importClientKey(secrets.clientKey, clientKey.alg),
      // With a providers list each has its own callback: an answer is only taken from the provider it is
      // addressed to (RFC 9700 §4.4.2, mix-up).
      redirectUri: new URL(listed ? `/oauth2/callback/${name}` : '/oauth2/callback', publicUrl).href,
      scopes: p.scopes,
      preset: p.preset,
      endSessionUrl: p.end_session_url,
      logoutIdTokenHint: p.logout_id_token_hint,
      algorithms: p.algorithms,
      timeoutMs: p.timeout * 1000,
      clock,
      fetch: guard.fetch,
      cache,
    })
    const bearer = createBearerVerifier(
      {
        issuer: p.issuer,
        audiences: p.audiences ?? [p.client_id],
        audienceClaim: cognito ? 'client_id' : 'aud',
        algorithms: p.algorithms,
        leewaySeconds: p.leeway,
        mapping: mappingOf(cognito),
        clock,
        requiredClaims: cognito ? { token_use: 'access' } : undefined,
        accessTokenTyp: p.access_token_typ,
        log,
        // Cognito compares its client_id claim, which every Cognito access token carries.
        idTokenAudience: p.audiences === undefined && !cognito ? p.client_id : undefined,
      },
      cache.getKey,
    )
    const logoutToken = createLogoutTokenVerifier(
      {
        issuer: p.issuer,
        clientId: p.client_id,
        algorithms: p.algorithms,
        leewaySeconds: p.leeway,
        clock,
      },
      cache.getKey,
    )
    providers.push({
      name,
      title,
      issuer: p.issuer,
      oidc: options.sharedRefresh ? { ...oidc, refresh: options.sharedRefresh(oidc.refresh) } : oidc,
      cache,
      guard,
      bearer,
      logoutToken,
      outageGraceSeconds: p.outage_grace,
      mapping: mappingOf(cognito),
    })
  }
  const first = providers[0]!
  const accepted = options.acceptProviders === undefined ? undefined : new Set(options.acceptProviders)
  const providerBearer = listed
    ? createBearerByIssuer(
        providers.map((p) => ({ name: p.name, issuer: p.issuer, verifier: p.bearer })),
        accepted,
      )
    : first.bearer
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
      providers: listed ? options.acceptProviders : undefined,
      otherClaimHeaders: options.otherClaimHeaders,
      sharedSignIn:
        domain === undefined
          ? undefined
          : (options.sharedSignIn ?? { origin: publicUrl.origin, returnOrigins: [publicUrl.origin] }),
    },
    {
      clock,
      oidc: first.oidc,
      providers: listed
        ? providers.map((p) => ({
            name: p.name,
            title: p.title,
            oidc: p.oidc,
            issuer: p.issuer,
            outageGraceSeconds: p.outageGraceSeconds,
            logoutToken: p.logoutToken,
            mapping: p.mapping,
          }))
        : undefined,
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
      logoutToken: first.logoutToken,
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
  return {
    gatehouse,
    oidc: first.oidc,
    codec,
    providerCache: first.cache,
    providerGuard: first.guard,
    providers: providers.map(({ name, title, issuer, oidc, cache, guard }) => ({
      name,
      title,
      issuer,
      oidc,
      cache,
      guard,
    })),
    securityHeaders,
  }
}
