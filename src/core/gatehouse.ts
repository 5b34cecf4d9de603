import { ASSERTION_HEADER } from './assertion.ts'
import type { BearerVerifier } from './bearer.ts'
import type { Clock } from './clock.ts'
import { clearCookie, cookieNamesWithPrefix, readCookie, serializeCookie, stripCookies } from './cookies.ts'
import {
  type Allow,
  type Decision,
  insufficientScope,
  isNavigation,
  json,
  page,
  problem,
  type RequestFacts,
  type Respond,
  redirect,
  unauthorized,
  wantsHtml,
} from './decisions.ts'
import { base64url, randomToken, sha256, timingSafeEqualString } from './encoding.ts'
import {
  ClientMisconfiguredError,
  ProviderBusyError,
  ProviderRejectedError,
  ProviderResponseError,
  ProviderUnavailableError,
} from './errors.ts'
import { createIdentityHeaders, type Identity, type IdentityMapping, identityFromClaims } from './identity.ts'
import type { LogoutTokenResult } from './logout-token.ts'
import type {
  AssertionSigner,
  Logger,
  OIDCPort,
  OneTimeStore,
  RateBucket,
  RateLimiter,
  SessionRevocations,
  TokenResult,
} from './ports.ts'
import { safeReturnPath, safeReturnTo } from './return-to.ts'
import {
  type Access,
  compileRoutePolicy,
  hasRequiredScopes,
  isAllowed,
  normalizePath,
  type RouteRule,
} from './route-policy.ts'
import type { Session, SessionCodec } from './session-codec.ts'
import { createTokenCache } from './token-cache.ts'

/** Options of the decision core. Every lifetime is explicit; nothing here has a hidden default. */
export interface GatehouseOptions {
  /** The public origin browsers use, e.g. `https://app.example.com`. */
  publicUrl: string
  /** Prefix of Gatehouse's own endpoints. Default `/oauth2`. */
  prefix?: string
  routes: readonly RouteRule[]
  session: {
    /** A session cookie lives this long after sign-in or its last refresh. */
    ttlSeconds: number
    /** Absolute end of a session, counted from sign-in; refreshes never extend past it. */
    maxTtlSeconds: number
    /** Refresh the provider's tokens when they expire within this many seconds (seed 004: 10 minutes). */
    refreshBeforeSeconds: number
    /**
     * When a refresh fails because the provider is unreachable (not because it refused), an expired
     * access token is tolerated this long, never past the session's max_ttl. Default 3600; 0 disables.
     */
    outageGraceSeconds?: number
  }
  /** How long a sign-in attempt (its state cookie) stays valid. */
  signInTtlSeconds: number
  mapping: IdentityMapping
  /** Also send the provider's access token upstream as `X-Auth-Request-Access-Token`. */
  passAccessToken: boolean
  /** Where the provider sends the browser after logout; a same-origin path. Default `/`. */
  signOutRedirectPath?: string
  /** The realm in `WWW-Authenticate`. Default `gatehouse`. */
  realm?: string
  /**
   * A client presenting the same refused token or cookie more than `after` times gets each further
   * answer later: 50 ms, doubling per repeat, at most `maxDelayMs` (see Respond.delayMs). Absent: never.
   */
  repeatPenalty?: { after: number; maxDelayMs: number } | undefined
  /**
   * How a request whose access token is due for a refresh is handled. `inline` (default): refreshed
   * within the request. `redirect` (seed 004's check_auth on Lambda@Edge, where check-auth holds no
   * client secret): a navigation is sent to `<prefix>/refresh?rd=<path>`; an API call is served while
   * the access token lives, then gets 401 `refresh_required` until it calls the refresh endpoint.
   */
  refreshMode?: 'inline' | 'redirect'
  /**
   * The provider's issuer: front-channel logout requests must name it (`iss`), and only its origin may
   * frame that endpoint. Absent: no front-channel logout endpoint.
   */
  providerIssuer?: string | undefined
  /**
   * Send the upstream a signed identity assertion (`X-Gatehouse-Assertion`, src/core/assertion.ts) for
   * this audience; needs `deps.assertionSigner`. Absent: none.
   */
  assertion?: { audience: string } | undefined
  /**
   * With `deps.providers`: the names of those this app accepts sessions of and offers for sign-in, in
   * the chooser's order. Default: every one.
   */
  providers?: readonly string[] | undefined
  /**
   * Config `session.cookie_domain`: one session for every app under the domain, signed in at `origin`
   * (public_url). A core at another origin sends a browser to `<origin><prefix>/sign_in?rd=<absolute
   * URL>`; every core accepts an absolute return URL of `returnOrigins` (the app origins) besides paths.
   */
  sharedSignIn?: { origin: string; returnOrigins: readonly string[] } | undefined
  /**
   * Other apps' `identity.headers_from_claims` pairs (lower-case header, claim): their claims are kept in
   * the sessions this core signs in, and clients' copies of their headers dropped, but not sent.
   */
  otherClaimHeaders?: ReadonlyArray<readonly [header: string, claim: string]> | undefined
}

/** One entry of a config `providers` list as the core uses it (built by src/assemble.ts). */
export interface CoreProvider {
  /** Recorded in sessions (and identities), and in its callback and logout paths: `<prefix>/callback/<name>`. */
  name: string
  /** What the sign-in chooser shows. */
  title: string
  oidc: OIDCPort
  issuer: string
  /** See GatehouseOptions.session.outageGraceSeconds: this provider's. */
  outageGraceSeconds: number
  /** Verifies this provider's back-channel logout tokens; absent: no back-channel endpoint for it. */
  logoutToken?: ((token: string) => Promise<LogoutTokenResult>) | undefined
  /** How its ID token claims become an identity; default `options.mapping`. */
  mapping?: IdentityMapping | undefined
}

export interface GatehouseDeps {
  clock: Clock
  oidc: OIDCPort
  codec: SessionCodec
  oneTime: OneTimeStore
  bearer?: BearerVerifier | undefined
  log: Logger
  /** Gatehouse's own public signing keys, served at /.well-known/jwks.json. */
  jwks?: (() => { keys: Record<string, unknown>[] }) | undefined
  /** Seconds verifiers may cache the JWKS: shorter than the time a new key is published before it signs. */
  jwksMaxAgeSeconds?: number | undefined
  /** Rate limits per client address, per credential and on the sign-in endpoints; none when absent. */
  limiter?: RateLimiter | undefined
  /** Sessions signed out (sign-out, `gatehouse sessions revoke`, provider logout); none refused when absent. */
  sessionRevocations?: SessionRevocations | undefined
  /** Verifies back-channel logout tokens (src/core/logout-token.ts); absent: no back-channel endpoint. */
  logoutToken?: ((token: string) => Promise<LogoutTokenResult>) | undefined
  /** Signs the identity assertions of `options.assertion`. */
  assertionSigner?: AssertionSigner | undefined
  /**
   * A config `providers` list (docs/providers.md), in order: each session records which one signed it in
   * (a session without one is the first's), sign-in offers a choice, and `oidc`, `logoutToken` and
   * `options.providerIssuer` are not used. Absent: the one provider of those, recorded nowhere.
   */
  providers?: readonly CoreProvider[] | undefined
}

export interface Gatehouse {
  /** Decide what to do with a request: pass it upstream, or answer it. */
  handle(facts: RequestFacts): Promise<Decision>
  /**
   * A synchronous, allocation-free first look for load shedding: does the request carry a credential,
   * and is it one refused a moment ago? Decides nothing; `handle` still checks everything.
   */
  classify(facts: RequestFacts): 'credential' | 'rejected' | 'none'
  /**
   * The index in `routes` of the rule that covers `pathname` (normalised), -1 for the default, undefined
   * for Gatehouse's own endpoints. Decides nothing: for traces.
   */
  route(method: string, pathname: string): number | undefined
  /** The cookie name prefix Gatehouse owns (used by adapters to avoid forwarding them). */
  readonly cookieName: string
  readonly prefix: string
}

/** The provider a session or sign-in belongs to; `name` undefined for a lone provider. */
interface ActiveProvider {
  name: string | undefined
  title: string
  oidc: OIDCPort
  issuer: string | undefined
  outageGraceSeconds: number
  logoutToken: ((token: string) => Promise<LogoutTokenResult>) | undefined
  /** The CSP of its front-channel logout page: only the provider may frame it. */
  frameAncestors: string
  mapping: IdentityMapping
}

type RefreshOutcome =
  | { ok: true; session: Session; setCookies: string[] }
  | { ok: false; kind: 'rejected' | 'unavailable'; reason: string; error?: unknown }

/** The answer to a request without a usable credential: a 401, or a redirect to sign in for a browser. */
type NotSignedIn = (facts: RequestFacts, returnTo: string, allowRedirect: boolean) => Promise<Respond>

const RECENT_REFRESH_MS = 60_000
const REJECTED_TTL_MS = 60_000
const REJECTED_MAX_CHARS = 8_000_000
const PENALTY_BASE_MS = 50
const LOOP_WINDOW_SECONDS = 60
const LOOP_MAX_SIGN_INS = 5
const EMPTY_IDENTITY: Readonly<Record<string, string>> = Object.freeze({
  'x-auth-request-user': '',
  'x-auth-request-email': '',
  'x-auth-request-groups': '',
  'x-auth-request-preferred-username': '',
  'x-auth-request-scopes': '',
})
const MIN_RETRY_MS = 5_000
const MAX_RETRY_MS = 300_000
const MAX_STATE_COOKIES = 8
// Redirect mode: after the refresh endpoint found the provider unreachable, navigations are not bounced
// to it again for this long (no redirect loop while the provider is down).
const REFRESH_WAIT_SECONDS = 30
// A logout token is a few KB at most; the form around it, too.
const LOGOUT_BODY_MAX_BYTES = 32 * 1024
const REVOCABLE = /^[\x21-\x7e]{1,255}$/

/**
 * The decision core: seed 004's check_auth, parse_auth, refresh_auth and sign_out behind one
 * `handle(facts)`. Pure apart from the ports it is given.
 *
 * @example
 * const gatehouse = createGatehouse(options, { clock, oidc, codec, oneTime, log })
 * const decision = await gatehouse.handle(facts)
 */
export function createGatehouse(options: GatehouseOptions, deps: GatehouseDeps): Gatehouse {
  const { clock, oidc, codec, oneTime, bearer, log } = deps
  const publicUrl = new URL(options.publicUrl)
  if (publicUrl.pathname !== '/' || publicUrl.search !== '') {
    throw new TypeError('publicUrl: must be an origin without path or query')
  }
  const origin = publicUrl.origin
  const prefix = options.prefix ?? '/oauth2'
  if (!/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/.test(prefix))
    throw new TypeError(`prefix: invalid path ${prefix}`)
  const { ttlSeconds, maxTtlSeconds, refreshBeforeSeconds } = options.session
  const outageGraceSeconds = options.session.outageGraceSeconds ?? 3600
  if (!(ttlSeconds > 0 && maxTtlSeconds >= ttlSeconds)) {
    throw new TypeError('session: ttl must be positive and max_ttl at least ttl')
  }
  const realm = options.realm ?? 'gatehouse'
  const signOutRedirect = safeReturnPath(options.signOutRedirectPath ?? '/')
  // A shared cookie domain: where sign-in happens, and the origins a browser may be sent back to.
  const shared = options.sharedSignIn
  const returnOrigins = new Set(shared?.returnOrigins ?? [])
  const returnToOf = (candidate: string | null | undefined, fallback = '/') =>
    safeReturnTo(candidate, returnOrigins, fallback)
  const matchRoute = compileRoutePolicy(options.routes)
  const cookieName = codec.cookieName
  const stateCookiePrefix = `${cookieName}-state-`
  const cookieAttrs = { secure: publicUrl.protocol === 'https:' }
  const loopCookie = `${cookieName}-loop`
  const refreshWaitCookie = `${cookieName}-refresh-wait`
  const refreshInline = (options.refreshMode ?? 'inline') === 'inline'
  const isOwnCookie = (name: string) =>
    name === cookieName ||
    name.startsWith(`${cookieName}.`) ||
    name.startsWith(stateCookiePrefix) ||
    name === loopCookie ||
    name === refreshWaitCookie
  const endpoints = {
    signIn: `${prefix}/sign_in`,
    callback: `${prefix}/callback`,
    refresh: `${prefix}/refresh`,
    signOut: `${prefix}/sign_out`,
    backchannelLogout: `${prefix}/backchannel_logout`,
    frontchannelLogout: `${prefix}/frontchannel_logout`,
    auth: `${prefix}/auth`,
    userinfo: `${prefix}/userinfo`,
  }
  const ownPrefix = `${prefix}/`
  // What a session keeps: this app's claims and every other app's (sent only by the app that names them).
  const otherClaimHeaders = options.otherClaimHeaders ?? []
  const storing = (m: IdentityMapping): IdentityMapping =>
    otherClaimHeaders.length === 0
      ? m
      : { ...m, claimHeaders: [...(m.claimHeaders ?? []), ...otherClaimHeaders] }
  const frameAncestorsOf = (issuer: string | undefined) =>
    issuer === undefined ? '' : `frame-ancestors ${new URL(issuer).origin}`
  // Providers (docs/providers.md): a lone one, or a named list whose sessions record their provider.
  const listed = deps.providers
  if (listed !== undefined && listed.length === 0) throw new TypeError('providers: expected at least one')
  const providers: ActiveProvider[] =
    listed === undefined
      ? [
          {
            name: undefined,
            title: '',
            oidc,
            issuer: options.providerIssuer,
            outageGraceSeconds,
            logoutToken: deps.logoutToken,
            frameAncestors: frameAncestorsOf(options.providerIssuer),
            mapping: storing(options.mapping),
          },
        ]
      : listed.map((p) => ({
          ...p,
          logoutToken: p.logoutToken,
          frameAncestors: frameAncestorsOf(p.issuer),
          mapping: storing(p.mapping ?? options.mapping),
        }))
  const providerByName = new Map(providers.map((p) => [p.name, p]))
  for (const name of options.providers ?? [])
    if (listed === undefined || !providerByName.has(name))
      throw new TypeError(`providers: ${name} is not in deps.providers`)
  const accepted = options.providers === undefined ? undefined : new Set(options.providers)
  const offered =
    options.providers === undefined ? providers : options.providers.map((n) => providerByName.get(n)!)
  const accepts = (p: ActiveProvider) => accepted === undefined || accepted.has(p.name!)
  /**
   * A session's provider: its recorded one; undefined when it left the config. With a providers list, a
   * session signed in before the list existed (none recorded) is the first's, and from here on says so
   * (headers, revocations by provider): its decoded identity, cached per cookie value, is given the name.
   */
  const providerOf = (session: Session): ActiveProvider | undefined => {
    if (listed === undefined) return providers[0]
    if (session.identity.provider === undefined) session.identity.provider = providers[0]!.name
    return providerByName.get(session.identity.provider)
  }
  const inFlightRefresh = new Map<string, Promise<RefreshOutcome>>()
  const refreshRetry = new Map<string, number>()
  // Seed 003: a client retrying a bad token in a loop costs a lookup, no parsing and no crypto.
  // Bounded in entries and in the characters held: the tokens are whatever clients send.
  const rejected = createTokenCache<{
    code: 'token_expired' | 'invalid_token'
    untilMs: number
    repeats: number
  }>(10_000, { maxBytes: REJECTED_MAX_CHARS })
  const repeatPenalty = options.repeatPenalty

  /** Hold the 401 for a client that keeps sending what was refused (see `repeatPenalty`). */
  function penalise(answer: NotSignedIn, repeats: number): NotSignedIn {
    if (repeatPenalty === undefined || repeats <= repeatPenalty.after) return answer
    const exponent = Math.min(30, repeats - repeatPenalty.after - 1)
    const delayMs = Math.min(repeatPenalty.maxDelayMs, PENALTY_BASE_MS * 2 ** exponent)
    return async (facts, returnTo, allowRedirect) => {
      const response = await answer(facts, returnTo, allowRedirect)
      if (response.status === 401) response.delayMs = delayMs
      return response
    }
  }
  const limiter = deps.limiter
  const recentRefresh = new Map<
    string,
    { oldRefreshToken: string; outcome: RefreshOutcome; untilMs: number }
  >()

  const nowSeconds = () => Math.floor(clock.now() / 1000)

  function sessionExpiry(
    signedInAt: number,
    tokens: { refreshToken?: string | undefined; accessTokenExpiresAt: number },
  ) {
    let exp = Math.min(nowSeconds() + ttlSeconds, signedInAt + maxTtlSeconds)
    // Without a refresh token the session cannot outlive the access token it carries.
    if (tokens.refreshToken === undefined) exp = Math.min(exp, tokens.accessTokenExpiresAt)
    return exp
  }

  const noHeaders: Readonly<Record<string, string>> = Object.freeze({})
  const claimHeaders = options.mapping.claimHeaders ?? []
  const identityHeaders = createIdentityHeaders(claimHeaders)
  // A client's copy of a claim header never reaches the upstream, whether or not the claim is there.
  const dropFromClient =
    claimHeaders.length + otherClaimHeaders.length === 0
      ? undefined
      : new Set([...claimHeaders, ...otherClaimHeaders].map(([header]) => header))
  const assertionAudience = options.assertion?.audience
  const assertionSigner = deps.assertionSigner
  if (assertionAudience !== undefined && assertionSigner === undefined)
    throw new TypeError('assertion: deps.assertionSigner is required')
  // Forward-auth answers every identity header, empty when unknown (see the auth endpoint).
  const emptyIdentity: Readonly<Record<string, string>> = Object.freeze({
    ...EMPTY_IDENTITY,
    ...Object.fromEntries(claimHeaders.map(([header]) => [header, ''])),
    ...(assertionAudience === undefined ? {} : { [ASSERTION_HEADER]: '' }),
    ...(deps.providers === undefined ? {} : { 'x-auth-request-provider': '' }),
  })
  function upstreamHeadersFor(
    identity: Identity | undefined,
    accessToken?: string,
  ): Readonly<Record<string, string>> {
    if (identity === undefined) return noHeaders
    const h = identityHeaders(identity)
    if (options.passAccessToken && accessToken !== undefined)
      return { ...h, 'x-auth-request-access-token': accessToken }
    return h
  }

  // The identity's headers with its assertion, merged once per assertion signed (see withAssertion).
  const asserted = new WeakMap<Identity, { token: string; headers: Readonly<Record<string, string>> }>()

  /** `headers` plus X-Gatehouse-Assertion when assertions are on: a promise only when one must be signed. */
  function withAssertion(
    identity: Identity | undefined,
    headers: Readonly<Record<string, string>>,
  ): Readonly<Record<string, string>> | Promise<Readonly<Record<string, string>>> {
    if (assertionAudience === undefined || identity === undefined) return headers
    const token = assertionSigner!(identity, assertionAudience)
    return typeof token === 'string'
      ? addAssertion(identity, headers, token)
      : token.then((t) => addAssertion(identity, headers, t))
  }

  function addAssertion(
    identity: Identity,
    headers: Readonly<Record<string, string>>,
    token: string,
  ): Readonly<Record<string, string>> {
    if (headers !== identityHeaders(identity)) return { ...headers, [ASSERTION_HEADER]: token }
    const hit = asserted.get(identity)
    if (hit !== undefined && hit.token === token) return hit.headers
    const merged = Object.freeze({ ...headers, [ASSERTION_HEADER]: token })
    asserted.set(identity, { token, headers: merged })
    return merged
  }

  // ---- sign in: start an attempt with its own state, nonce and PKCE verifier -----------------------

  async function startSignIn(
    facts: RequestFacts,
    returnTo: string,
    setCookies: string[] = [],
    chosen: ActiveProvider | undefined = offered.length === 1 ? offered[0] : undefined,
  ): Promise<Respond> {
    // A shared cookie domain: sign-in happens at public_url, which sends the browser back here.
    if (shared !== undefined && shared.origin !== origin)
      return signInElsewhere(returnTo, setCookies, chosen?.name ?? null)
    // Several providers and none chosen: the chooser page, at the sign-in endpoint.
    if (chosen === undefined)
      return redirect(`${endpoints.signIn}?rd=${encodeURIComponent(returnTo)}`, setCookies, 'choose_provider')
    // Loop guard (seed 003): a browser that starts sign-in over and over (its session cookie never
    // sticks, or an app redirects back at once) gets a clear page instead of another round trip.
    const [countText, startText] = (readCookie(facts.header('cookie'), loopCookie) ?? '').split('.')
    const t = nowSeconds()
    const prevStart = Number(startText)
    const prevCount = Number(countText)
    const inWindow = Number.isInteger(prevStart) && prevStart <= t && t - prevStart < LOOP_WINDOW_SECONDS
    const windowStart = inWindow ? prevStart : t
    const count = (inWindow && Number.isInteger(prevCount) && prevCount > 0 ? Math.min(99, prevCount) : 0) + 1
    const loopSet = serializeCookie(loopCookie, `${count}.${windowStart}`, {
      ...cookieAttrs,
      maxAgeSeconds: LOOP_WINDOW_SECONDS,
    })
    if (count > LOOP_MAX_SIGN_INS) {
      log.warn({ code: 'sign_in_loop', count, ua: facts.header('user-agent') }, 'sign-in keeps starting over')
      return problem(
        facts,
        429,
        'sign_in_loop',
        'Signing in keeps starting over',
        'This browser was sent to sign in several times in a row without staying signed in. Check that cookies are allowed for this site, then try again in a minute.',
        { headers: { 'retry-after': String(LOOP_WINDOW_SECONDS) }, setCookies: [...setCookies, loopSet] },
      )
    }
    const state = randomToken(32)
    const nonce = randomToken(32)
    const codeVerifier = randomToken(32)
    const codeChallenge = base64url(await sha256(codeVerifier))
    let location: string
    try {
      location = await chosen.oidc.authorizationUrl({ state, nonce, codeChallenge })
    } catch (err) {
      return providerDown(facts, err, chosen)
    }
    const expiresAt = nowSeconds() + options.signInTtlSeconds
    // `p`: the provider the attempt was started with; its callback must be that provider's (no mix-up).
    const attempt: Record<string, unknown> = { st: state, n: nonce, v: codeVerifier, r: returnTo }
    if (chosen.name !== undefined) attempt['p'] = chosen.name
    const sealed = await codec.seal(attempt, expiresAt)
    const cookies = [...setCookies]
    // Each attempt has its own cookie, so parallel tabs do not clash; old attempts are capped.
    const existing = cookieNamesWithPrefix(facts.header('cookie'), stateCookiePrefix)
    for (const name of existing.slice(0, Math.max(0, existing.length - (MAX_STATE_COOKIES - 1)))) {
      cookies.push(clearCookie(name, cookieAttrs))
    }
    cookies.push(
      serializeCookie(stateCookiePrefix + state.slice(0, 16), sealed, {
        ...cookieAttrs,
        maxAgeSeconds: options.signInTtlSeconds,
      }),
    )
    cookies.push(loopSet)
    return redirect(location, cookies, 'sign_in')
  }

  /** To the sign-in at the shared cookie domain's origin, with the way back as an absolute URL. */
  function signInElsewhere(returnTo: string, setCookies: string[], provider: string | null): Respond {
    const back = returnTo.startsWith('/') ? origin + returnTo : returnTo
    let location = `${shared!.origin}${endpoints.signIn}?rd=${encodeURIComponent(back)}`
    // An app that offers one provider (or a link naming one) skips the chooser there too.
    const named = provider ?? (listed !== undefined && offered.length === 1 ? offered[0]!.name! : null)
    if (named !== null) location += `&provider=${encodeURIComponent(named)}`
    // Some of several: the chooser there offers only these (a hint for the page; this app still refuses
    // the others' sessions).
    else if (listed !== undefined && offered.length < providers.length)
      location += `&providers=${encodeURIComponent(offered.map((p) => p.name).join(','))}`
    return redirect(location, setCookies, 'sign_in_elsewhere')
  }

  function providerDown(facts: RequestFacts, err: unknown, provider?: ActiveProvider): Respond {
    const named = provider?.name === undefined ? {} : { provider: provider.name }
    if (err instanceof ProviderBusyError) {
      // Our own cap on provider calls is full: nothing reached the provider. A short, precise wait.
      log.warn({ err: describe(err), ...named }, 'provider calls capped')
      return problem(
        facts,
        503,
        'idp_busy',
        'Sign-in is busy',
        'Too many sign-ins are in progress. Try again in a few seconds.',
        { headers: { 'retry-after': String(err.retryAfterSeconds) } },
      )
    }
    log.warn({ err: describe(err), ...named }, 'identity provider unavailable')
    // With a choice of providers, the way back to the chooser: another one may be up.
    const choose = offered.length > 1 ? { link: { href: endpoints.signIn, text: 'Sign in another way' } } : {}
    return problem(
      facts,
      503,
      'idp_unavailable',
      'Sign-in is unavailable',
      offered.length > 1 && provider?.name !== undefined
        ? `Signing in with ${provider.title} is unavailable. Try again in a few minutes, or sign in another way.`
        : 'The sign-in service is unavailable. Try again in a few minutes.',
      { headers: { 'retry-after': '30' }, ...choose },
    )
  }

  /** The chooser page: a link per provider this app offers, each starting sign-in with it. */
  function chooser(
    facts: RequestFacts,
    returnTo: string,
    status = 200,
    message?: string,
    choices: readonly ActiveProvider[] = offered,
  ): Respond {
    const rd = encodeURIComponent(returnTo)
    const links = choices.map((p) => ({
      href: `${endpoints.signIn}?provider=${encodeURIComponent(p.name!)}&rd=${rd}`,
      text: p.title,
    }))
    const code = status === 200 ? 'choose_provider' : 'unknown_provider'
    if (status !== 200) log.info({ code }, 'sign-in with a provider this app does not offer')
    const text = message ?? 'Choose how to sign in.'
    if (wantsHtml(facts)) return page(status, code, 'Sign in', text, links)
    // A script is told the same in JSON: which providers there are, and where each sign-in starts.
    const list = choices.map((p, i) => ({ name: p.name, title: p.title, sign_in: links[i]!.href }))
    return json(
      status,
      code,
      status === 200 ? { providers: list } : { error: code, error_description: text, providers: list },
      { 'cache-control': 'no-store' },
    )
  }

  // ---- parse_auth: the callback ----------------------------------------------------------------------

  async function callback(
    facts: RequestFacts,
    query: URLSearchParams,
    provider: ActiveProvider,
  ): Promise<Respond> {
    const state = query.get('state')
    const retry = { href: endpoints.signIn, text: 'Sign in again' }
    const bad = (code: string, message: string, reason: string, setCookies: string[] = []) => {
      log.warn({ code, reason }, 'sign-in callback refused')
      return problem(facts, 400, code, 'Sign-in failed', message, { link: retry, setCookies })
    }
    if (state === null || !/^[A-Za-z0-9_-]{43}$/.test(state)) {
      return bad(
        'invalid_state',
        'This sign-in link is not valid. Start again.',
        'state missing or malformed',
      )
    }
    const name = stateCookiePrefix + state.slice(0, 16)
    const sealed = readCookie(facts.header('cookie'), name)
    if (sealed === undefined) {
      return bad(
        'invalid_state',
        'This sign-in attempt expired or was started in another browser. Start again.',
        'no state cookie for this state',
      )
    }
    const clearState = [clearCookie(name, cookieAttrs)]
    const data = await codec.unseal(sealed)
    const st = data?.['st']
    if (data === undefined || typeof st !== 'string' || !timingSafeEqualString(st, state)) {
      return bad(
        'invalid_state',
        'This sign-in attempt is not valid. Start again.',
        'state cookie invalid or foreign',
        clearState,
      )
    }
    // RFC 9700 §4.4 (mix-up): the answer reached the callback of another provider than the attempt was
    // started with; its code is never sent to either.
    if (data['p'] !== provider.name) {
      return bad(
        'invalid_state',
        'This sign-in answer came from another sign-in service than the one it was started with. Start again.',
        `provider mismatch: started with ${String(data['p'] ?? '(none)')}, answered at ${provider.name ?? '(none)'}`,
        clearState,
      )
    }
    const returnTo = returnToOf(typeof data['r'] === 'string' ? data['r'] : '/')
    const providerError = query.get('error')
    if (providerError !== null) {
      // RFC 6749 §4.1.2.1: the provider refused or the user cancelled.
      const safeCode = providerError.replace(/[^\w.-]/g, '').slice(0, 64)
      log.warn(
        { code: 'provider_error', providerError: safeCode },
        'provider returned an error to the callback',
      )
      return problem(
        facts,
        400,
        'provider_error',
        'Sign-in was not completed',
        `The identity provider did not sign you in (${safeCode}).`,
        { link: retry, setCookies: clearState },
      )
    }
    if (!query.get('code'))
      return bad('missing_code', 'The sign-in answer had no code. Start again.', 'no code', clearState)
    // Single use: a replayed callback (same state) is refused even with the cookie still present.
    const fresh = await oneTime.consume(`state:${state}`, (nowSeconds() + options.signInTtlSeconds) * 1000)
    if (!fresh)
      return bad(
        'invalid_state',
        'This sign-in link was already used. Start again.',
        'state replayed',
        clearState,
      )

    let tokens: TokenResult
    try {
      tokens = await provider.oidc.exchangeCode(query, {
        state,
        nonce: String(data['n']),
        codeVerifier: String(data['v']),
      })
    } catch (err) {
      if (err instanceof ProviderUnavailableError) {
        const r = providerDown(facts, err, provider)
        r.setCookies.push(...clearState)
        return r
      }
      if (err instanceof ClientMisconfiguredError) {
        // The provider refused the gateway's own credentials: nothing the user can fix by signing in
        // again. 500 (our configuration, not a bad answer), and an error line for the operator.
        log.error(
          {
            code: 'client_misconfigured',
            oauthError: err.oauthError,
            reason: describe(err),
            ...(provider.name === undefined ? {} : { provider: provider.name }),
          },
          "the provider refused the gateway's client credentials: check provider.client_id, client_secret, client_key and client_auth",
        )
        return problem(
          facts,
          500,
          'client_misconfigured',
          'Sign-in is not working',
          "The identity provider refused this gateway's own credentials, so nobody can sign in until its operators fix the configuration. This is not a problem with your account.",
          { setCookies: clearState },
        )
      }
      if (err instanceof ProviderRejectedError) {
        return bad(
          'code_rejected',
          'The identity provider refused this sign-in. Start again.',
          describe(err),
          clearState,
        )
      }
      return bad(
        'id_token_invalid',
        'The sign-in answer could not be verified. Start again.',
        describe(err),
        clearState,
      )
    }
    const claimed = tokens.claims ? identityFromClaims(tokens.claims, provider.mapping, log) : undefined
    const identity =
      claimed === undefined || provider.name === undefined ? claimed : { ...claimed, provider: provider.name }
    if (identity === undefined) {
      return bad(
        'id_token_invalid',
        'The sign-in answer had no identity. Start again.',
        'ID token missing or without sub',
        clearState,
      )
    }
    const signedInAt = nowSeconds()
    const session: Session = {
      sid: randomToken(16),
      identity,
      signedInAt,
      expiresAt: sessionExpiry(signedInAt, tokens),
      maxExpiresAt: signedInAt + maxTtlSeconds,
      accessToken: tokens.accessToken,
      accessTokenExpiresAt: tokens.accessTokenExpiresAt,
      refreshToken: tokens.refreshToken,
      idToken: tokens.idToken,
      providerSid: providerSidOf(tokens.claims),
    }
    const cookies = await codec.write(session, facts.header('cookie'))
    log.info(
      {
        event: 'sign_in',
        sid: session.sid,
        sub: identity.sub,
        ...(provider.name ? { provider: provider.name } : {}),
      },
      'signed in',
    )
    return redirect(returnTo, [...clearState, ...cookies], 'signed_in')
  }

  // ---- refresh_auth: once per session, even under concurrency ----------------------------------------

  function refreshSession(
    session: Session,
    cookieHeader: string | undefined,
    provider: ActiveProvider,
  ): Promise<RefreshOutcome> {
    const rt = session.refreshToken!
    const recent = recentRefresh.get(session.sid)
    if (recent !== undefined && recent.untilMs > clock.now() && recent.oldRefreshToken === rt) {
      return Promise.resolve(recent.outcome)
    }
    const pending = inFlightRefresh.get(session.sid)
    if (pending !== undefined) return pending
    const run = (async (): Promise<RefreshOutcome> => {
      let tokens: TokenResult
      try {
        tokens = await provider.oidc.refresh(rt)
      } catch (err) {
        const kind =
          err instanceof ProviderRejectedError || err instanceof ProviderResponseError
            ? 'rejected'
            : 'unavailable'
        log.warn({ event: 'refresh_failed', sid: session.sid, kind, err: describe(err) }, 'refresh failed')
        return { ok: false, kind, reason: describe(err), error: err }
      }
      let identity = session.identity
      if (tokens.claims !== undefined) {
        const next = identityFromClaims(tokens.claims, provider.mapping, log)
        if (next === undefined || next.sub !== identity.sub) {
          log.warn({ event: 'refresh_failed', sid: session.sid }, 'refreshed ID token names another subject')
          return { ok: false, kind: 'rejected', reason: 'subject changed on refresh' }
        }
        identity = provider.name === undefined ? next : { ...next, provider: provider.name }
      }
      const refreshToken = tokens.refreshToken ?? rt
      const next: Session = {
        ...session,
        identity,
        accessToken: tokens.accessToken,
        accessTokenExpiresAt: tokens.accessTokenExpiresAt,
        refreshToken,
        idToken: tokens.idToken ?? session.idToken,
        providerSid: providerSidOf(tokens.claims) ?? session.providerSid,
        expiresAt: sessionExpiry(session.signedInAt, {
          refreshToken,
          accessTokenExpiresAt: tokens.accessTokenExpiresAt,
        }),
      }
      const setCookies = await codec.write(next, cookieHeader)
      log.info({ event: 'refresh', sid: session.sid }, 'session refreshed')
      return { ok: true, session: next, setCookies }
    })()
    inFlightRefresh.set(session.sid, run)
    run.then(
      (outcome) => {
        inFlightRefresh.delete(session.sid)
        // Requests still carrying the old cookie (sent before the browser saw the new one) reuse this
        // outcome instead of presenting the already-rotated refresh token again. After a failure to reach
        // the provider, the same holds for a backoff with jitter: a retry per session, not per request.
        const now = clock.now()
        for (const [k, v] of recentRefresh) if (v.untilMs <= now) recentRefresh.delete(k)
        let holdMs = RECENT_REFRESH_MS
        if (!outcome.ok && outcome.kind === 'unavailable') {
          const delayMs = Math.min(MAX_RETRY_MS, 2 * (refreshRetry.get(session.sid) ?? MIN_RETRY_MS / 2))
          if (refreshRetry.size >= 10_000) refreshRetry.clear()
          refreshRetry.set(session.sid, delayMs)
          holdMs = Math.round(delayMs * (0.75 + Math.random() * 0.5))
        } else {
          refreshRetry.delete(session.sid)
        }
        recentRefresh.set(session.sid, { oldRefreshToken: rt, outcome, untilMs: now + holdMs })
      },
      // An unexpected failure (not the provider's answer) reaches the waiting requests as an error.
      () => inFlightRefresh.delete(session.sid),
    )
    return run
  }

  // ---- check_auth ----------------------------------------------------------------------------------------

  type Authenticated =
    | {
        ok: true
        identity: Identity
        accessToken?: string | undefined
        setCookies: string[]
        session?: Session
        token?: string
        /** Served under the outage grace: the provider could not refresh an expired access token. */
        degraded?: boolean
      }
    | {
        ok: false
        response: NotSignedIn
      }

  const notSignedIn =
    (code: string, description: string, invalidToken: boolean, setCookies: string[] = []): NotSignedIn =>
    async (facts, returnTo, allowRedirect) => {
      if (allowRedirect && isNavigation(facts)) return startSignIn(facts, returnTo, setCookies)
      return unauthorized(realm, code, description, invalidToken, setCookies)
    }

  const revocations = deps.sessionRevocations
  /**
   * Signed out by id, by user or by provider session. With a providers list, a user and a provider
   * session are the provider's (`<name>:<sub>`, `<name>:<sid>`: the same sub at two providers is two
   * people); a bare sub (`gatehouse sessions revoke --user` without `--provider`) covers every provider.
   */
  const isRevoked = (session: Session): boolean => {
    if (revocations === undefined) return false
    if (revocations.isRevoked(session)) return true
    if (listed === undefined) return false
    providerOf(session)
    const name = session.identity.provider
    if (name === undefined) return false
    return revocations.isRevoked({
      sid: session.sid,
      identity: { sub: `${name}:${session.identity.sub}` },
      providerSid: session.providerSid === undefined ? undefined : `${name}:${session.providerSid}`,
      signedInAt: session.signedInAt,
    })
  }

  /** A signed-out session's cookie: cleared, a sign-in redirect for a navigation, else 401 `session_revoked`. */
  const sessionRevoked = (cookieHeader: string | undefined) =>
    notSignedIn('session_revoked', 'The session was signed out', true, codec.clear(cookieHeader))

  /** First sight of a revoked session's cookie value: into the refusal cache, so a repeat costs a lookup. */
  function refuseRevoked(token: string, session: Session, cookieHeader: string | undefined): NotSignedIn {
    codec.refuse(token, 'revoked')
    log.info({ code: 'session_revoked', sid: session.sid }, 'revoked session cookie refused')
    return sessionRevoked(cookieHeader)
  }

  async function authenticate(facts: RequestFacts, mayRefresh: boolean): Promise<Authenticated> {
    const authorization = facts.header('authorization')
    if (authorization !== undefined) {
      const m = /^Bearer +([^\s]+) *$/i.exec(authorization)
      if (m === null) {
        log.info({ code: 'invalid_request' }, 'malformed Authorization header')
        return { ok: false, response: notSignedIn('invalid_token', 'Malformed Authorization header', true) }
      }
      if (bearer === undefined) {
        return {
          ok: false,
          response: notSignedIn('invalid_token', 'Bearer tokens are not accepted here', true),
        }
      }
      const presented = m[1]!
      const known = rejected.get(presented)
      if (known !== undefined && known.untilMs > clock.now()) {
        known.repeats++
        const text =
          known.code === 'token_expired' ? 'The access token expired' : 'The access token is not valid'
        return { ok: false, response: penalise(notSignedIn(known.code, text, true), known.repeats) }
      }
      const result = await bearer.verify(presented)
      if (!result.ok) {
        log.info({ code: result.code, reason: result.reason }, 'bearer token refused')
        rejected.set(presented, { code: result.code, untilMs: clock.now() + REJECTED_TTL_MS, repeats: 0 })
        const text =
          result.code === 'token_expired' ? 'The access token expired' : 'The access token is not valid'
        return { ok: false, response: notSignedIn(result.code, text, true) }
      }
      return { ok: true, identity: result.identity, accessToken: result.token, setCookies: [] }
    }

    const cookieHeader = facts.header('cookie')
    const read = await codec.read(cookieHeader)
    if (!read.ok) {
      if (read.reason === 'missing') {
        return { ok: false, response: notSignedIn('missing_credentials', 'Sign-in required', false) }
      }
      const repeats = read.repeats ?? 0
      if (read.reason === 'revoked') {
        return { ok: false, response: penalise(sessionRevoked(cookieHeader), repeats) }
      }
      // One log line per bad cookie value, not per retry of it.
      if (repeats === 0) log.info({ code: 'invalid_session', reason: read.reason }, 'session cookie refused')
      const text = read.reason === 'expired' ? 'The session expired' : 'The session cookie is not valid'
      const code = read.reason === 'expired' ? 'session_expired' : 'invalid_session'
      return {
        ok: false,
        response: penalise(notSignedIn(code, text, true, codec.clear(cookieHeader)), repeats),
      }
    }
    const { session } = read
    if (isRevoked(session)) return { ok: false, response: refuseRevoked(read.token, session, cookieHeader) }
    const provider = providerOf(session)
    if (provider === undefined) {
      // Its provider left the config: the session ends with it (refused from now on: one log line).
      log.info(
        { code: 'invalid_session', reason: 'provider no longer configured', sid: session.sid },
        'session cookie refused',
      )
      codec.refuse(read.token, 'expired')
      const answer = notSignedIn('session_expired', 'The session ended', true, codec.clear(cookieHeader))
      return { ok: false, response: answer }
    }
    if (!accepts(provider)) {
      // Valid for other apps on this host: kept, and this app asks for a sign-in with one of its own.
      log.info(
        { code: 'provider_not_accepted', provider: provider.name, sid: session.sid },
        'session of a provider this app does not accept',
      )
      return {
        ok: false,
        response: notSignedIn('provider_not_accepted', 'Sign in with a provider this app accepts', true),
      }
    }
    const now = nowSeconds()
    const ate = session.accessTokenExpiresAt ?? Number.POSITIVE_INFINITY
    if (mayRefresh && session.refreshToken !== undefined && ate - now <= refreshBeforeSeconds) {
      const outcome = await refreshSession(session, cookieHeader, provider)
      if (outcome.ok) {
        return {
          ok: true,
          identity: outcome.session.identity,
          accessToken: outcome.session.accessToken,
          setCookies: outcome.setCookies,
          session: outcome.session,
        }
      }
      if (outcome.kind === 'rejected') {
        // invalid_grant: the provider ended this session. Clear it; a browser signs in afresh (no loop:
        // the new session carries a fresh refresh token). This cookie value stays refused here.
        codec.refuse(read.token, 'expired')
        return {
          ok: false,
          response: notSignedIn('session_expired', 'The session ended', true, codec.clear(cookieHeader)),
        }
      }
      if (ate <= now) {
        // The provider is unreachable (not refusing): a bounded grace keeps the session, never past its
        // absolute end, and the upstream is told (seed 000).
        const graceEnd = Math.min(ate + provider.outageGraceSeconds, session.maxExpiresAt)
        if (now < graceEnd) {
          return {
            ok: true,
            identity: session.identity,
            accessToken: session.accessToken,
            setCookies: [],
            session,
            token: read.token,
            degraded: true,
          }
        }
        log.info({ event: 'session_ended', sid: session.sid, reason: 'outage grace over' }, 'session ended')
        codec.forget(read.token)
        return {
          ok: false,
          response: notSignedIn(
            'session_expired',
            'The session ended while the sign-in service was unavailable',
            true,
            codec.clear(cookieHeader),
          ),
        }
      }
      // The provider is unreachable but the access token still lives: serve, retry on a later request.
    }
    return {
      ok: true,
      identity: session.identity,
      accessToken: session.accessToken,
      setCookies: [],
      session,
      token: read.token,
    }
  }

  /** A 429 with Retry-After when `key` is over its limit in `bucket`; undefined when it may pass. */
  async function limit(facts: RequestFacts, bucket: RateBucket, key: string): Promise<Respond | undefined> {
    if (limiter === undefined) return undefined
    const r = await limiter.consume(bucket, key)
    if (r.allowed) return undefined
    // The key is a client address or a session id, never a token.
    log.info(
      { code: 'rate_limited', bucket, retryAfter: r.retryAfterSeconds, ua: facts.header('user-agent') },
      'rate limited',
    )
    return problem(
      facts,
      429,
      'rate_limited',
      'Too many requests',
      `Too many requests. Try again in ${r.retryAfterSeconds} s.`,
      {
        headers: { 'retry-after': String(r.retryAfterSeconds) },
      },
    )
  }

  function forbidden(facts: RequestFacts, identity: Identity, setCookies: string[]): Respond {
    log.info({ code: 'forbidden', sub: identity.sub }, 'authenticated but not allowed')
    return problem(
      facts,
      403,
      'forbidden',
      'Access denied',
      'You are signed in, but not allowed to see this page.',
      {
        setCookies,
        link: { href: endpoints.signOut, text: 'Sign in as someone else' },
      },
    )
  }

  /** 403 `insufficient_scope`: a route that names scopes, and a token without them or a browser session. */
  function scopeMissing(
    facts: RequestFacts,
    access: Access,
    identity: Identity,
    setCookies: string[],
  ): Respond {
    const required = access.kind === 'restricted' ? (access.scopes ?? []) : []
    const bySession = identity.scopes === undefined
    log.info(
      { code: 'insufficient_scope', sub: identity.sub, credential: bySession ? 'session' : 'bearer' },
      'credential lacks a required scope',
    )
    const description = bySession
      ? 'This address is for API tokens with the required scope; a browser session has none'
      : 'The access token lacks a scope this address requires'
    return insufficientScope(facts, realm, required, description, setCookies)
  }

  async function checkAuth(facts: RequestFacts, path: string, access: Access): Promise<Decision> {
    const upstreamCookie = stripCookies(facts.header('cookie'), cookieName, isOwnCookie)
    if (access.kind === 'anonymous') {
      // Identity is passed when a valid session is at hand, but an anonymous route never redirects or refreshes.
      const auth =
        facts.header('cookie') !== undefined || facts.header('authorization') !== undefined
          ? await authenticate(facts, false)
          : undefined
      const identity = auth?.ok ? auth.identity : undefined
      return allow(path, identity, auth?.ok ? auth.accessToken : undefined, upstreamCookie, [])
    }
    const auth = await authenticate(facts, refreshInline)
    if (!auth.ok) return auth.response(facts, path, true)
    let degraded = auth.degraded
    if (!refreshInline && auth.session !== undefined) {
      const due = await refreshDue(facts, path, auth.session, auth.token)
      if (due === 'degraded') degraded = true
      else if (due !== 'serve') return due
    }
    const byCredential = await limit(facts, 'credential', auth.session?.sid ?? `sub:${auth.identity.sub}`)
    if (byCredential !== undefined) return byCredential
    if (!isAllowed(access, auth.identity)) return forbidden(facts, auth.identity, auth.setCookies)
    if (!hasRequiredScopes(access, auth.identity))
      return scopeMissing(facts, access, auth.identity, auth.setCookies)
    return allow(path, auth.identity, auth.accessToken, upstreamCookie, auth.setCookies, degraded)
  }

  /** Redirect mode: what a session whose access token is due for a refresh gets instead of a refresh. */
  async function refreshDue(
    facts: RequestFacts,
    path: string,
    session: Session,
    token: string | undefined,
  ): Promise<Respond | 'serve' | 'degraded'> {
    const now = nowSeconds()
    const ate = session.accessTokenExpiresAt ?? Number.POSITIVE_INFINITY
    if (session.refreshToken === undefined || ate - now > refreshBeforeSeconds) return 'serve'
    const wait = readCookie(facts.header('cookie'), refreshWaitCookie)
    const until = wait === undefined ? undefined : (await codec.unseal(wait))?.['w']
    const waiting = typeof until === 'number' && until > now
    if (!waiting && isNavigation(facts)) {
      return redirect(`${endpoints.refresh}?rd=${encodeURIComponent(path)}`, [], 'refresh_required')
    }
    if (ate > now) return 'serve'
    if (!waiting) {
      return unauthorized(
        realm,
        'refresh_required',
        `The access token expired; refresh the session at ${endpoints.refresh}`,
        true,
      )
    }
    // The refresh endpoint found the provider unreachable a moment ago: the same bounded grace as inline.
    const grace = providerOf(session)?.outageGraceSeconds ?? 0
    if (now < Math.min(ate + grace, session.maxExpiresAt)) return 'degraded'
    log.info({ event: 'session_ended', sid: session.sid, reason: 'outage grace over' }, 'session ended')
    if (token !== undefined) codec.forget(token)
    return notSignedIn(
      'session_expired',
      'The session ended while the sign-in service was unavailable',
      true,
      codec.clear(facts.header('cookie')),
    )(facts, path, true)
  }

  function allow(
    path: string,
    identity: Identity | undefined,
    accessToken: string | undefined,
    upstreamCookie: string | undefined,
    setCookies: string[],
    degraded = false,
  ): Allow | Promise<Allow> {
    const headers = withAssertion(identity, upstreamHeadersFor(identity, accessToken))
    if (headers instanceof Promise)
      return headers.then((h) => allowWith(path, identity, h, upstreamCookie, setCookies, degraded))
    return allowWith(path, identity, headers, upstreamCookie, setCookies, degraded)
  }

  function allowWith(
    path: string,
    identity: Identity | undefined,
    headers: Readonly<Record<string, string>>,
    upstreamCookie: string | undefined,
    setCookies: string[],
    degraded: boolean,
  ): Allow {
    return {
      kind: 'allow',
      path,
      identity,
      upstreamHeaders: degraded ? { ...headers, 'x-gatehouse-degraded': 'idp-unavailable' } : headers,
      dropFromClient,
      upstreamCookie,
      setCookies,
    }
  }

  // ---- sign_out --------------------------------------------------------------------------------------------

  async function signOut(facts: RequestFacts, query: URLSearchParams): Promise<Respond> {
    const cookieHeader = facts.header('cookie')
    const read = await codec.read(cookieHeader)
    const cookies = codec.clear(cookieHeader)
    for (const name of cookieNamesWithPrefix(cookieHeader, stateCookiePrefix))
      cookies.push(clearCookie(name, cookieAttrs))
    if (readCookie(cookieHeader, refreshWaitCookie) !== undefined)
      cookies.push(clearCookie(refreshWaitCookie, cookieAttrs))
    const returnTo = returnToOf(query.get('rd'), signOutRedirect)
    let location = returnTo
    if (read.ok) {
      // Server-side: this session is refused from now on, here and (once stored) on every instance, even
      // with a copy of the cookie.
      codec.refuse(read.token, 'revoked')
      let revoked = revocations !== undefined
      try {
        await revocations?.revoke([
          { kind: 'sid', value: read.session.sid, expiresAt: read.session.maxExpiresAt },
        ])
      } catch (err) {
        revoked = false
        log.warn(
          { event: 'session_revocation_not_stored', sid: read.session.sid, err: describe(err) },
          'sign-out holds on this instance; other instances refuse the session once the store takes it',
        )
      }
      log.info(
        {
          event: 'sign_out',
          sid: read.session.sid,
          sub: read.session.identity.sub,
          state: revoked ? 'revoked' : 'local',
        },
        'signed out',
      )
      // The session's own provider (none when it left the config: then only Gatehouse's sign-out).
      const provider = providerOf(read.session)
      const rt = read.session.refreshToken
      if (rt !== undefined && provider !== undefined) {
        // Best effort; sign-out never waits on a slow provider for more than the revoke call's own timeout.
        provider.oidc
          .revoke(rt)
          .catch((err) => log.info({ err: describe(err) }, 'refresh token revocation failed'))
      }
      try {
        const end = await provider?.oidc.endSessionUrl({
          idTokenHint: read.session.idToken,
          logoutHint: read.session.identity.sub,
          postLogoutRedirectUri: returnTo.startsWith('/') ? origin + returnTo : returnTo,
        })
        if (end !== undefined) location = end
      } catch (err) {
        log.warn({ err: describe(err) }, 'no end-session URL: provider unavailable')
      }
    }
    return redirect(location, cookies, 'signed_out')
  }

  // ---- provider-initiated logout: OIDC Back-Channel Logout 1.0 and Front-Channel Logout 1.0 --------------

  async function backchannelLogout(
    facts: RequestFacts,
    provider: ActiveProvider,
    verify: NonNullable<GatehouseDeps['logoutToken']>,
  ): Promise<Respond> {
    // §2.8: 400 on any failure (the reason goes to the log, never the token), 200 and no-store on success.
    const refuse = (reason: string): Respond => {
      log.warn({ code: 'invalid_logout_token', reason }, 'back-channel logout refused')
      return json(400, 'invalid_logout_token', { error: 'invalid_request' })
    }
    const form = facts.form === undefined ? 'unsupported_media_type' : await facts.form(LOGOUT_BODY_MAX_BYTES)
    if (form === 'too_large') return refuse('body too large')
    if (form === 'unsupported_media_type') return refuse('body is not application/x-www-form-urlencoded')
    const tokens = form.getAll('logout_token')
    if (tokens.length !== 1) return refuse(tokens.length === 0 ? 'no logout_token' : 'several logout_token')
    const r = await verify(tokens[0]!)
    if (!r.ok) return refuse(r.reason)
    // §2.6 step 8: each logout token once.
    const scope = provider.name === undefined ? '' : `${provider.name}:`
    if (!(await oneTime.consume(`logout:${scope}${r.jti}`, r.replayUntil * 1000)))
      return refuse('jti replayed')
    // §2.7: a sid ends that provider session's sessions; a sub alone, every session of the user. With a
    // providers list, both are this provider's (see isRevoked).
    const entry =
      r.sid !== undefined
        ? { kind: 'psid' as const, value: scope + r.sid }
        : { kind: 'sub' as const, value: scope + r.sub! }
    if (!REVOCABLE.test(entry.value)) return refuse(`${entry.kind} is not 1-255 visible ASCII characters`)
    await endProviderSession(entry, r.signedInBefore, 'backchannel_logout')
    return {
      kind: 'respond',
      status: 200,
      code: 'logged_out',
      headers: { 'cache-control': 'no-store' },
      body: '',
      setCookies: [],
    }
  }

  async function endProviderSession(
    entry: { kind: 'psid' | 'sub'; value: string },
    signedInBefore: number,
    reason: string,
  ): Promise<void> {
    let state = 'revoked'
    try {
      await revocations!.revoke([{ ...entry, revokedAt: signedInBefore }])
    } catch (err) {
      state = 'local'
      log.warn(
        { event: 'session_revocation_not_stored', kind: entry.kind, err: describe(err) },
        'provider logout holds on this instance; other instances refuse the sessions once the store takes it',
      )
    }
    const named = entry.kind === 'psid' ? { psid: entry.value } : { sub: entry.value }
    log.info(
      { event: 'session_revoked', kind: entry.kind, ...named, reason, state },
      'provider ended sessions',
    )
  }

  async function frontchannelLogout(
    facts: RequestFacts,
    query: URLSearchParams,
    provider: ActiveProvider,
    issuer: string,
  ): Promise<Respond> {
    // Front-Channel Logout 1.0 §3: rendered in an iframe of the provider's logout page, so only the
    // provider may frame it (HTML: X-Frame-Options is ignored once a CSP has frame-ancestors).
    const headers = { 'content-security-policy': provider.frameAncestors }
    const iss = query.get('iss')
    const sid = query.get('sid')
    if (iss !== issuer || sid === null || !REVOCABLE.test(sid)) {
      const reason = iss !== issuer ? 'iss missing or not the provider' : 'sid missing or malformed'
      log.warn({ code: 'invalid_frontchannel_logout', reason }, 'front-channel logout refused')
      return page(
        400,
        'invalid_request',
        'Sign-out failed',
        'This sign-out request is not valid.',
        undefined,
        headers,
      )
    }
    const scope = provider.name === undefined ? '' : `${provider.name}:`
    await endProviderSession({ kind: 'psid', value: scope + sid }, nowSeconds(), 'frontchannel_logout')
    // This browser's cookie, if the browser sent it (SameSite=Lax cookies are not sent to a cross-site
    // iframe): cleared only when it is of the session ended, so a forged link cannot sign anyone out.
    const cookieHeader = facts.header('cookie')
    const read = await codec.read(cookieHeader)
    const ended = read.ok && read.session.providerSid === sid && providerOf(read.session) === provider
    const setCookies = ended ? codec.clear(cookieHeader) : []
    if (read.ok && setCookies.length > 0) codec.refuse(read.token, 'revoked')
    return page(
      200,
      'logged_out',
      'Signed out',
      'You are signed out of this application.',
      undefined,
      headers,
      setCookies,
    )
  }

  // ---- the router ----------------------------------------------------------------------------------------

  async function ownEndpoint(facts: RequestFacts, pathname: string, search: string): Promise<Decision> {
    const query = new URLSearchParams(search)
    const method = facts.method
    const isGet = method === 'GET' || method === 'HEAD'
    // The provider a callback or logout is for: the lone one, or with a providers list the one named in
    // the path (`<endpoint>/<name>`; the bare endpoint is then no endpoint at all).
    let endpoint = pathname
    let provider = providers[0]!
    if (listed !== undefined) {
      const slash = pathname.lastIndexOf('/')
      const base = pathname.slice(0, slash)
      const named = providerByName.get(pathname.slice(slash + 1))
      const perProvider = (p: string) =>
        p === endpoints.callback || p === endpoints.backchannelLogout || p === endpoints.frontchannelLogout
      if (perProvider(pathname)) endpoint = ''
      else if (perProvider(base)) {
        // A callback only for a provider this app offers; a logout (verified by the provider) for any.
        if (named === undefined || (base === endpoints.callback && !accepts(named))) endpoint = ''
        else {
          endpoint = base
          provider = named
        }
      }
    }
    switch (endpoint) {
      case endpoints.signIn: {
        if (!isGet) break
        // Behind forward-auth, nginx can hand over the original request URI as a header instead of
        // an rd parameter it cannot URL-encode. Either way only a same-origin path is accepted.
        const rd = returnToOf(
          query.get('rd') ?? facts.header('x-forwarded-uri') ?? facts.header('x-original-uri'),
        )
        const choice = query.get('provider')
        if (shared !== undefined && shared.origin !== origin) return signInElsewhere(rd, [], choice)
        if (listed === undefined) return startSignIn(facts, rd)
        if (choice === null) {
          // `providers=a,b` (from an app offering some of them): only those, when any is offered here.
          const hint = query.get('providers')?.split(',')
          const hinted = hint === undefined ? [] : offered.filter((p) => hint.includes(p.name!))
          const choices = hinted.length === 0 ? offered : hinted
          return choices.length === 1
            ? startSignIn(facts, rd, [], choices[0])
            : chooser(facts, rd, 200, undefined, choices)
        }
        const chosen = providerByName.get(choice)
        if (chosen === undefined || !accepts(chosen))
          return chooser(facts, rd, 400, 'There is no such way to sign in here. Choose one of these.')
        return startSignIn(facts, rd, [], chosen)
      }
      case endpoints.callback:
        if (!isGet) break
        return callback(facts, query, provider)
      case endpoints.signOut:
        if (!isGet && method !== 'POST') break
        return signOut(facts, query)
      case endpoints.backchannelLogout:
        if (method !== 'POST' || provider.logoutToken === undefined || revocations === undefined) break
        return backchannelLogout(facts, provider, provider.logoutToken)
      case endpoints.frontchannelLogout:
        if (!isGet || provider.issuer === undefined || revocations === undefined) break
        return frontchannelLogout(facts, query, provider, provider.issuer)
      case endpoints.refresh: {
        if (!isGet && method !== 'POST') break
        // Redirect mode: a navigation here was bounced by check-auth; it gets redirects, never JSON.
        const bounced = !refreshInline && isNavigation(facts)
        const rd = safeReturnPath(query.get('rd'))
        const read = await codec.read(facts.header('cookie'))
        if ((read.ok && isRevoked(read.session)) || (!read.ok && read.reason === 'revoked')) {
          const answer = read.ok
            ? refuseRevoked(read.token, read.session, facts.header('cookie'))
            : sessionRevoked(facts.header('cookie'))
          return answer(facts, rd, bounced)
        }
        // A session of a provider gone from the config, or that this app does not accept: nothing to refresh.
        const of = read.ok ? providerOf(read.session) : undefined
        if (!read.ok || read.session.refreshToken === undefined || of === undefined || !accepts(of)) {
          if (bounced) return startSignIn(facts, rd, read.ok ? [] : codec.clear(facts.header('cookie')))
          return unauthorized(realm, 'missing_credentials', 'No session to refresh', false)
        }
        const outcome = await refreshSession(read.session, facts.header('cookie'), of)
        if (!outcome.ok) {
          if (outcome.kind === 'unavailable' && bounced) {
            const until = nowSeconds() + REFRESH_WAIT_SECONDS
            const wait = serializeCookie(refreshWaitCookie, await codec.seal({ w: until }, until), {
              ...cookieAttrs,
              maxAgeSeconds: REFRESH_WAIT_SECONDS,
            })
            return redirect(rd, [wait], 'refresh_deferred')
          }
          if (outcome.kind === 'unavailable')
            return providerDown(facts, outcome.error ?? new Error(outcome.reason), of)
          if (bounced) {
            // Two tabs bounced here with the same cookie can reach different instances (Lambda@Edge shares
            // no single-flight): with refresh-token rotation the loser gets invalid_grant while the winner's
            // Set-Cookie carries the new session, which a clearing Set-Cookie arriving last would overwrite.
            // So the first refusal keeps the cookie and sends the browser back to rd once, marked with a
            // sealed 30 s `-refresh-wait` naming the refused refresh token (no `w`: check-auth does not wait
            // on it). Back with the newer cookie, it is served; back with the same refused one, it is
            // bounced here again and this time signed out and sent to sign in (no loop).
            const refused = base64url((await sha256(read.session.refreshToken)).subarray(0, 16))
            const marker = readCookie(facts.header('cookie'), refreshWaitCookie)
            const seen = marker === undefined ? undefined : (await codec.unseal(marker))?.['refused']
            const grant = outcome.error instanceof ProviderRejectedError && outcome.error.oauthError
            if (grant === 'invalid_grant' && seen !== refused) {
              const until = nowSeconds() + REFRESH_WAIT_SECONDS
              const mark = serializeCookie(refreshWaitCookie, await codec.seal({ refused }, until), {
                ...cookieAttrs,
                maxAgeSeconds: REFRESH_WAIT_SECONDS,
              })
              log.info(
                { event: 'refresh_refused_once', sid: read.session.sid },
                'refresh refused; back to rd once',
              )
              return redirect(rd, [mark], 'refresh_refused')
            }
            codec.forget(read.token)
            const cleared = codec.clear(facts.header('cookie'))
            if (marker !== undefined) cleared.push(clearCookie(refreshWaitCookie, cookieAttrs))
            return startSignIn(facts, rd, cleared)
          }
          // The provider ended the session: this cookie value is refused from now on, not just cleared.
          if (outcome.kind === 'rejected') codec.refuse(read.token, 'expired')
          return unauthorized(
            realm,
            'session_expired',
            'The session ended',
            true,
            codec.clear(facts.header('cookie')),
          )
        }
        // A copy: the outcome (and its array) is shared with every request presenting the same old cookie.
        const setCookies = [...outcome.setCookies]
        if (readCookie(facts.header('cookie'), refreshWaitCookie) !== undefined)
          setCookies.push(clearCookie(refreshWaitCookie, cookieAttrs))
        if (isNavigation(facts)) return redirect(rd, setCookies, 'refreshed')
        return json(200, 'refreshed', { expires_at: outcome.session.expiresAt }, {}, setCookies)
      }
      case endpoints.userinfo: {
        if (!isGet) break
        const auth = await authenticate(facts, true)
        if (!auth.ok) return auth.response(facts, '/', false)
        const id = auth.identity
        return json(
          200,
          'userinfo',
          {
            sub: id.sub,
            user: id.user,
            email: id.email,
            groups: id.groups,
            preferred_username: id.preferredUsername,
            name: id.name,
            ...(id.provider === undefined ? {} : { provider: id.provider }),
          },
          {},
          auth.setCookies,
        )
      }
      case endpoints.auth: {
        // Forward-auth (nginx auth_request, Traefik, Caddy): 202 with identity headers, or 401 (a sign-in
        // redirect only when asked with ?redirect=1).
        // The original URI: X-Forwarded-Uri (Traefik, Caddy, our nginx config) or X-Original-URI (nginx's
        // auth_request examples). Neither: nothing to judge, so 400, never a verdict on `/`. Both and they
        // differ: one came from the client (auth_request passes its headers on), so 400 too.
        const forwardedUri = facts.header('x-forwarded-uri')
        const originalUri = facts.header('x-original-uri')
        const uri = forwardedUri ?? originalUri
        if (uri === undefined || (originalUri !== undefined && originalUri !== uri)) {
          const code = uri === undefined ? 'missing_forwarded_uri' : 'conflicting_forwarded_uri'
          log.info({ code }, 'forward-auth check refused: no single original URI')
          return json(400, code, {
            error: code,
            error_description:
              uri === undefined
                ? 'Send the original request URI in X-Forwarded-Uri or X-Original-URI'
                : 'X-Forwarded-Uri and X-Original-URI disagree',
          })
        }
        const target = normalizePath(uri)
        if (target === undefined)
          return json(400, 'bad_path', {
            error: 'bad_path',
            error_description: 'X-Forwarded-Uri is not a valid path',
          })
        const { access } = matchRoute(facts.header('x-forwarded-method') ?? 'GET', target.pathname)
        const auth = await authenticate(facts, true)
        if (!auth.ok) {
          // Every identity header is present, empty when unknown: proxies that copy headers from this
          // answer (Caddy 2.6's copy_headers) would otherwise copy a placeholder or a client's own value.
          if (access.kind === 'anonymous')
            return {
              kind: 'respond',
              status: 202,
              code: 'anonymous',
              headers: { ...emptyIdentity },
              body: '',
              setCookies: [],
            }
          // Traefik and Caddy pass a non-2xx answer to the client as it is, so with ?redirect=1 a browser
          // navigation gets the sign-in redirect (nginx's auth_request accepts only 2xx, 401 and 403).
          const returnTo = safeReturnPath(target.pathname + target.search)
          return auth.response(facts, returnTo, query.get('redirect') === '1')
        }
        if (!isAllowed(access, auth.identity))
          return json(403, 'forbidden', { error: 'forbidden' }, {}, auth.setCookies)
        if (!hasRequiredScopes(access, auth.identity))
          return scopeMissing(facts, access, auth.identity, auth.setCookies)
        return {
          kind: 'respond',
          status: 202,
          code: 'authorized',
          headers: {
            ...emptyIdentity,
            ...(await withAssertion(auth.identity, upstreamHeadersFor(auth.identity, auth.accessToken))),
          },
          body: '',
          setCookies: auth.setCookies,
        }
      }
    }
    return problem(facts, 404, 'not_found', 'Not found', 'There is no such Gatehouse endpoint.')
  }

  return {
    cookieName,
    prefix,
    route(method, pathname) {
      if (pathname.startsWith(ownPrefix)) return undefined
      if (pathname === '/.well-known/jwks.json' && deps.jwks !== undefined) return undefined
      return matchRoute(method, pathname).rule
    },
    classify(facts) {
      const authorization = facts.header('authorization')
      if (authorization !== undefined) {
        const token = authorization.slice(authorization.indexOf(' ') + 1).trim()
        const known = rejected.get(token)
        return known !== undefined && known.untilMs > clock.now() ? 'rejected' : 'credential'
      }
      const cookieHeader = facts.header('cookie')
      if (readCookie(cookieHeader, cookieName) === undefined) return 'none'
      return codec.wasRefused(cookieHeader) ? 'rejected' : 'credential'
    },
    async handle(facts) {
      const target = normalizePath(facts.url)
      if (target === undefined) {
        log.info({ code: 'bad_path' }, 'request path refused')
        return problem(facts, 400, 'bad_path', 'Bad request', 'The request path is not valid.')
      }
      const { pathname, search } = target
      const byClient = await limit(facts, 'client', facts.clientAddress)
      if (byClient !== undefined) return byClient
      if (pathname.startsWith(ownPrefix)) {
        if (
          pathname === endpoints.signIn ||
          pathname === endpoints.callback ||
          pathname.startsWith(`${endpoints.callback}/`) ||
          pathname === endpoints.refresh
        ) {
          const byEndpoint = await limit(facts, 'auth_endpoint', facts.clientAddress)
          if (byEndpoint !== undefined) return byEndpoint
        }
        return ownEndpoint(facts, pathname, search)
      }
      if (pathname === '/.well-known/jwks.json' && deps.jwks !== undefined) {
        return json(200, 'jwks', deps.jwks(), {
          'cache-control': `public, max-age=${deps.jwksMaxAgeSeconds ?? 300}`,
        })
      }
      const { access } = matchRoute(facts.method, pathname)
      return checkAuth(facts, pathname + search, access)
    },
  }
}

/** The provider's session id from ID token claims (OIDC Front/Back-Channel Logout `sid`). */
function providerSidOf(claims: Record<string, unknown> | undefined): string | undefined {
  const sid = claims?.['sid']
  return typeof sid === 'string' && sid !== '' ? sid : undefined
}

/** An error's class, code and message for the log: never a token (ours never put one in a message). */
function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return `${err.name}${typeof code === 'string' ? ` ${code}` : ''}: ${err.message}`
  }
  return String(err)
}
