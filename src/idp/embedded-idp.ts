import type { IncomingMessage, ServerResponse } from 'node:http'
import type { DatabaseSync } from 'node:sqlite'
import Provider, {
  type Account,
  errors,
  type Grant,
  type Interaction,
  type KoaContextWithOIDC,
} from 'oidc-provider'

import { readFormBody } from './form-body.ts'
import { loadOrCreateKeyMaterial } from './key-material.ts'
import { errorPage, logoutPage, PAGE_HEADERS, signedOutPage, signInPage } from './pages.ts'
import { createSQLiteAdapter } from './sqlite-adapter.ts'
import { createUserStore, type User, type UserStore, type UserStoreOptions } from './users.ts'

/** A relying party of the embedded IdP (in practice: the Gatehouse gateway itself). */
export interface EmbeddedIdPClient {
  client_id: string
  /** Required unless the client authenticates with private_key_jwt or is public (`none`). */
  client_secret?: string
  /** Default client_secret_basic (client_secret_post is accepted from such a client too). */
  token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none'
  /** private_key_jwt: the client's public keys. */
  jwks?: { keys: Record<string, unknown>[] }
  /** Exact-match redirect URIs (RFC 9700 §4.1.3). */
  redirect_uris: string[]
  post_logout_redirect_uris?: string[]
  /**
   * OIDC Back-Channel Logout 1.0: where the provider posts a logout token (naming its session id) when
   * the user signs out at the provider, e.g. `https://app.example.com/oauth2/backchannel_logout`.
   */
  backchannel_logout_uri?: string
}

export interface EmbeddedIdPOptions {
  /**
   * The issuer identifier: the public URL including the mount path and no trailing slash, e.g.
   * `http://localhost:8080/_idp`. Every URL the IdP builds uses this origin, whatever Host the request had.
   */
  issuer: string
  /** node:sqlite database holding users, keys and provider state; `':memory:'` in tests. */
  db: DatabaseSync
  clients: EmbeddedIdPClient[]
  /** The `aud` of the JWT access tokens (the gateway's client id). */
  accessTokenAudience: string
  /** Default 3600. */
  accessTokenTtlSeconds?: number
  /** Default 3600. */
  idTokenTtlSeconds?: number
  /**
   * Absolute lifetime of a refresh token family: rotation hands out new tokens with the remaining time, never
   * more. Default 14 days. Without the `offline_access` scope, refresh tokens also end with the IdP session.
   */
  refreshTokenTtlSeconds?: number
  /** The IdP's own browser session (the "signed in at the IdP" cookie). Default 1 day. */
  sessionTtlSeconds?: number
  /** Options of the user store (scrypt cost, clock). */
  users?: UserStoreOptions
}

export interface EmbeddedIdP {
  readonly issuer: string
  /** The oidc-provider instance, e.g. to listen to its events (`server_error`, `grant.success`, …). */
  readonly provider: Provider
  /**
   * Serves every path under the issuer's path prefix. Route `<prefix>/*` here without stripping the prefix;
   * anything outside it gets a 404. Interaction-route failures are emitted as the provider's `server_error`.
   */
  handler(req: IncomingMessage, res: ServerResponse): void
  readonly users: UserStore
  /** Stops serving (later requests get 503). The database stays open: it belongs to the caller. */
  close(): Promise<void>
}

/**
 * The resource indicator (RFC 8707) every authorization resolves to. It only exists so oidc-provider issues
 * JWT access tokens; their `aud` is `accessTokenAudience`, not this value.
 */
export const ACCESS_TOKEN_RESOURCE = 'urn:gatehouse:access-token'

const OIDC_SCOPES = ['openid', 'email', 'profile', 'groups', 'offline_access']
const AUTHORIZATION_CODE_TTL_SECONDS = 60
const INTERACTION_TTL_SECONDS = 30 * 60
const LOGIN_BODY_LIMIT_BYTES = 8 * 1024
const UID = '[A-Za-z0-9_-]{1,64}'
const INTERACTION_ROUTE = new RegExp(`^/interaction/(${UID})$`)
const LOGIN_ROUTE = new RegExp(`^/interaction/(${UID})/login$`)

interface ResolvedOptions {
  readonly issuer: string
  readonly issuerURL: URL
  /** The issuer's path without trailing slash; `''` when the issuer is an origin. */
  readonly mountPath: string
  readonly clients: readonly EmbeddedIdPClient[]
  readonly accessTokenAudience: string
  readonly accessTokenTtlSeconds: number
  readonly idTokenTtlSeconds: number
  readonly refreshTokenTtlSeconds: number
  readonly sessionTtlSeconds: number
}

/**
 * Starts the embedded OpenID Provider: authorization code flow with PKCE (S256) only, signed JWT access tokens
 * for the gateway, ID tokens carrying the profile, email and groups claims, rotating refresh tokens, RP-initiated
 * logout, and its own sign-in page backed by {@link createUserStore}. Signing and cookie keys are created on
 * first start and kept in `db`.
 *
 * @example
 * ```ts
 * const idp = await createEmbeddedIdP({
 *   issuer: 'http://localhost:8080/_idp',
 *   db: new DatabaseSync('gatehouse.db'),
 *   clients: [{ client_id: 'gatehouse', client_secret, redirect_uris: ['http://localhost:8080/_auth/callback'] }],
 *   accessTokenAudience: 'gatehouse',
 * })
 * http.createServer((req, res) => req.url?.startsWith('/_idp/') ? idp.handler(req, res) : app(req, res))
 * ```
 */
export async function createEmbeddedIdP(options: EmbeddedIdPOptions): Promise<EmbeddedIdP> {
  const config = resolveOptions(options)
  const { db } = options
  const users = createUserStore(db, options.users)
  const keys = loadOrCreateKeyMaterial(db)
  const { mountPath } = config
  const backchannelOrigins = new Set(
    config.clients.flatMap((c) =>
      c.backchannel_logout_uri === undefined ? [] : [new URL(c.backchannel_logout_uri).origin],
    ),
  )

  const provider: Provider = new Provider(config.issuer, {
    adapter: createSQLiteAdapter(db),
    clients: config.clients.map((client) => ({
      client_id: client.client_id,
      ...(client.client_secret === undefined ? {} : { client_secret: client.client_secret }),
      ...(client.jwks === undefined ? {} : { jwks: client.jwks }),
      redirect_uris: [...client.redirect_uris],
      post_logout_redirect_uris: [...(client.post_logout_redirect_uris ?? [])],
      ...(client.backchannel_logout_uri === undefined
        ? {}
        : {
            backchannel_logout_uri: client.backchannel_logout_uri,
            backchannel_logout_session_required: true,
          }),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
    })),
    // oidc-provider accepts either of the two secret methods from a client registered with one of them.
    // Other methods only when a client is registered with one (tests of Gatehouse's client_auth).
    clientAuthMethods: [
      ...new Set([
        'client_secret_basic',
        'client_secret_post',
        ...config.clients.map((c) => c.token_endpoint_auth_method ?? 'client_secret_basic'),
      ]),
    ],
    responseTypes: ['code'],
    scopes: OIDC_SCOPES,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // The ID token carries the scope's claims even though an access token is issued: relying parties need
    // no userinfo call (there is none: access tokens are for the gateway, not for the IdP).
    conformIdTokenClaims: false,
    allowOmittingSingleRegisteredRedirectUri: false,
    findAccount: async (_ctx, sub) => {
      const user = users.findById(sub)
      return user ? toAccount(user) : undefined
    },
    jwks: { keys: keys.jwks.keys.map((key) => ({ ...key })) },
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
    cookies: {
      names: { session: '_idp_session', interaction: '_idp_interaction', resume: '_idp_resume' },
      // Scoped to the mount so the gateway's own cookies and the IdP's never meet. Secure follows the
      // issuer's scheme (see the forwarded headers pinned in the handler); plain http works for dev.
      long: { httpOnly: true, sameSite: 'lax', path: mountPath || '/' },
      short: { httpOnly: true, sameSite: 'lax' },
      keys: [...keys.cookieKeys],
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: false },
      revocation: {
        enabled: true,
        // RFC 7009 §2.1: a client revokes only its own tokens; anything else is ignored (still a 200).
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      introspection: { enabled: false },
      // Clients with a backchannel_logout_uri are told when a user signs out here (and get `sid` in ID tokens).
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => sendKoaPage(ctx, logoutPage(form)),
        postLogoutSuccessSource: async (ctx) => sendKoaPage(ctx, signedOutPage()),
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) =>
          oneOf === undefined || oneOf.includes(ACCESS_TOKEN_RESOURCE) ? ACCESS_TOKEN_RESOURCE : oneOf,
        // Code and refresh grants reuse the resource granted at authorization: every access token is a JWT.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== ACCESS_TOKEN_RESOURCE) throw new errors.InvalidTarget()
          return {
            scope: 'openid email profile groups',
            audience: config.accessTokenAudience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: config.accessTokenTtlSeconds,
          }
        },
      },
    },
    pkce: { required: () => true },
    // The only outgoing requests are back-channel logouts to the clients configured here (there is no
    // dynamic registration), which in dev and tests are on loopback: oidc-provider's guard against
    // special-use addresses is lifted for those origins only.
    fetch: async (url, options) => {
      if (!backchannelOrigins.has(new URL(url).origin)) return fetch(url, options)
      const { dispatcher: _guard, ...rest } = options
      return fetch(url, rest)
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // OIDC Core §11: offline_access (granted only with prompt=consent) is what lets tokens outlive the session.
    expiresWithSession: async (_ctx, code) => !code.scopes.has('offline_access'),
    rotateRefreshToken: true,
    loadExistingGrant: async (ctx) => loadFirstPartyGrant(provider, ctx, config),
    interactions: { url: async (_ctx, interaction) => `${mountPath}/interaction/${interaction.uid}` },
    renderError: async (ctx, out) => {
      const message = out.error_description ? `${out.error}: ${out.error_description}` : out.error
      sendKoaPage(ctx, errorPage('Sign-in error', message))
    },
    ttl: {
      AccessToken: config.accessTokenTtlSeconds,
      AuthorizationCode: AUTHORIZATION_CODE_TTL_SECONDS,
      IdToken: config.idTokenTtlSeconds,
      RefreshToken: (ctx) => {
        const rotated = ctx?.oidc.entities.RotatedRefreshToken
        return rotated ? Math.max(1, rotated.remainingTTL) : config.refreshTokenTtlSeconds
      },
      Session: config.sessionTtlSeconds,
      Interaction: INTERACTION_TTL_SECONDS,
      // Outlives every refresh token issued under it; see loadFirstPartyGrant.
      Grant: config.refreshTokenTtlSeconds + config.sessionTtlSeconds,
    },
  })

  // URLs are built from the issuer, never from request headers: the handler pins X-Forwarded-Proto/Host to the
  // issuer's, which also makes cookies Secure exactly when the issuer is https (TLS offloaded in front or not).
  provider.proxy = true
  const forwardedProto = config.issuerURL.protocol.slice(0, -1)
  const forwardedHost = config.issuerURL.host
  const providerCallback = provider.callback()
  let closed = false

  function handler(req: IncomingMessage, res: ServerResponse): void {
    if (closed) {
      sendPage(res, 503, errorPage('Unavailable', 'The sign-in service is shutting down.'))
      return
    }
    const url = req.url ?? '/'
    const rest = stripMount(url, mountPath)
    if (rest === undefined) {
      sendPage(res, 404, errorPage('Not found', 'There is nothing here.'))
      return
    }
    req.headers['x-forwarded-proto'] = forwardedProto
    req.headers['x-forwarded-host'] = forwardedHost

    const path = rest.split('?', 1)[0]!
    const show = INTERACTION_ROUTE.exec(path)
    const login = show ? null : LOGIN_ROUTE.exec(path)
    if (show || login) {
      const method = req.method ?? 'GET'
      const allowed = show ? method === 'GET' || method === 'HEAD' : method === 'POST'
      if (!allowed) {
        res.setHeader('allow', show ? 'GET, HEAD' : 'POST')
        sendPage(res, 405, errorPage('Method not allowed', 'This page does not accept that request.'))
        return
      }
      const uid = (show ?? login)![1]!
      const work = show ? showInteraction(req, res, uid) : submitLogin(req, res, uid)
      work.catch((error: unknown) => {
        provider.emit('server_error', provider.createContext(req, res), error)
        if (!res.headersSent) {
          sendPage(
            res,
            500,
            errorPage('Something went wrong', 'The sign-in service failed. Please try again.'),
          )
        } else {
          res.destroy()
        }
      })
      return
    }

    // oidc-provider routes on req.url without the mount and rebuilds its URLs from originalUrl/baseUrl
    // (lib/helpers/oidc_context.js urlFor), the way express hands a mounted app its request.
    Object.assign(req, { originalUrl: url, baseUrl: mountPath })
    req.url = rest
    void providerCallback(req, res)
  }

  async function showInteraction(req: IncomingMessage, res: ServerResponse, uid: string): Promise<void> {
    const interaction = await loadInteraction(req, res, uid)
    if (!interaction) return
    switch (interaction.prompt.name) {
      case 'login': {
        const hint = interaction.params['login_hint']
        const username = typeof hint === 'string' && hint.length <= 64 ? hint : ''
        sendPage(res, 200, signInPage({ action: loginAction(uid), username }))
        return
      }
      case 'consent':
        // Reached only when a request insists (prompt=consent): clients are first-party, so grant and go on.
        await autoConsent(req, res, interaction)
        return
      default:
        await provider.interactionFinished(
          req,
          res,
          { error: 'access_denied', error_description: 'unsupported interaction' },
          { mergeWithLastSubmission: false },
        )
    }
  }

  async function submitLogin(req: IncomingMessage, res: ServerResponse, uid: string): Promise<void> {
    const body = await readFormBody(req, LOGIN_BODY_LIMIT_BYTES)
    if (body.kind === 'too_large') {
      res.setHeader('connection', 'close')
      sendPage(res, 413, errorPage('Request too large', 'The sign-in form was too large.'))
      return
    }
    if (body.kind === 'unsupported_media_type') {
      sendPage(res, 415, errorPage('Unsupported request', 'Submit the sign-in form.'))
      return
    }
    const interaction = await loadInteraction(req, res, uid)
    if (!interaction) return
    if (interaction.prompt.name !== 'login') {
      sendPage(res, 400, errorPage('Already signed in', 'Go back to the application and try again.'))
      return
    }
    const username = body.fields.get('username') ?? ''
    const user = await users.verify(username, body.fields.get('password') ?? '')
    if (!user) {
      const page = signInPage({ action: loginAction(uid), username, error: 'Wrong username or password.' })
      sendPage(res, 401, page)
      return
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.sub, amr: ['pwd'], remember: true } },
      { mergeWithLastSubmission: false },
    )
  }

  async function loadInteraction(
    req: IncomingMessage,
    res: ServerResponse,
    uid: string,
  ): Promise<Interaction | undefined> {
    let interaction: Interaction
    try {
      interaction = await provider.interactionDetails(req, res)
    } catch (error) {
      if (!(error instanceof errors.SessionNotFound)) throw error
      sendPage(res, 400, errorPage('Sign-in expired', 'Go back to the application and sign in again.'))
      return undefined
    }
    // The interaction cookie names the interaction; the URL must agree (a stale tab, a forged link).
    if (interaction.uid !== uid) {
      sendPage(res, 400, errorPage('Sign-in expired', 'Go back to the application and sign in again.'))
      return undefined
    }
    return interaction
  }

  async function autoConsent(
    req: IncomingMessage,
    res: ServerResponse,
    interaction: Interaction,
  ): Promise<void> {
    const accountId = interaction.session?.accountId
    const clientId = interaction.params['client_id']
    if (!accountId || typeof clientId !== 'string') {
      await provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'no signed-in user to consent' },
        { mergeWithLastSubmission: false },
      )
      return
    }
    const existing = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined
    const grant = existing ?? new provider.Grant({ accountId, clientId })
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = interaction.prompt.details
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '))
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims)
    for (const [resource, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '))
    }
    const grantId = await grant.save()
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true })
  }

  function loginAction(uid: string): string {
    return `${mountPath}/interaction/${uid}/login`
  }

  return Object.freeze({
    issuer: config.issuer,
    provider,
    handler,
    users,
    async close() {
      closed = true
    },
  })
}

/**
 * Consent for first-party clients (oidc-provider FAQ: "skip consent"): the grant of this session and client,
 * extended with whatever the request asks for, so the consent prompt never needs a page. A grant with less
 * than a refresh-token lifetime left is replaced, which keeps every refresh token within its grant's life.
 */
async function loadFirstPartyGrant(
  provider: Provider,
  ctx: KoaContextWithOIDC,
  config: ResolvedOptions,
): Promise<Grant | undefined> {
  const { oidc } = ctx
  const { client, account } = oidc
  if (!client || !account) return undefined

  const grantId = oidc.result?.consent?.grantId ?? oidc.session.grantIdFor(client.clientId)
  let grant = grantId ? await provider.Grant.find(grantId) : undefined
  let changed = false
  const nowSeconds = Math.floor(Date.now() / 1000)
  if (
    !grant ||
    grant.accountId !== account.accountId ||
    (grant.exp ?? 0) - nowSeconds < config.refreshTokenTtlSeconds
  ) {
    grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId })
    changed = true
  }

  const grantedScopes = new Set(grant.getOIDCScopeEncountered().split(' '))
  const scopes = [...oidc.requestParamOIDCScopes].filter((scope) => !grantedScopes.has(scope))
  if (scopes.length > 0) {
    grant.addOIDCScope(scopes.join(' '))
    changed = true
  }
  const grantedClaims = new Set(grant.getOIDCClaimsEncountered())
  const claims = [...oidc.requestParamClaims].filter((claim) => !grantedClaims.has(claim))
  if (claims.length > 0) {
    grant.addOIDCClaims(claims)
    changed = true
  }
  for (const [resource, server] of Object.entries(oidc.resourceServers)) {
    const granted = new Set(grant.getResourceScopeEncountered(resource).split(' '))
    const wanted = [...oidc.requestParamScopes].filter(
      (scope) => server.scopes.has(scope) && !granted.has(scope),
    )
    if (wanted.length > 0) {
      grant.addResourceScope(resource, wanted.join(' '))
      changed = true
    }
  }
  if (changed) await grant.save()
  return grant
}

function toAccount(user: User): Account {
  const claims: { sub: string; [claim: string]: unknown } = {
    sub: user.sub,
    preferred_username: user.username,
    groups: [...user.groups],
  }
  if (user.email !== undefined) {
    claims['email'] = user.email
    claims['email_verified'] = user.emailVerified
  }
  if (user.name !== undefined) claims['name'] = user.name
  // oidc-provider filters these by the granted scopes and claims.
  return { accountId: user.sub, claims: () => claims }
}

function stripMount(url: string, mountPath: string): string | undefined {
  if (!url.startsWith('/')) return undefined
  if (mountPath === '') return url
  if (url === mountPath) return '/'
  if (url.startsWith(`${mountPath}/`)) return url.slice(mountPath.length)
  if (url.startsWith(`${mountPath}?`)) return `/${url.slice(mountPath.length)}`
  return undefined
}

function sendPage(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, PAGE_HEADERS)
  res.end(html)
}

function sendKoaPage(ctx: KoaContextWithOIDC, html: string): void {
  for (const [name, value] of Object.entries(PAGE_HEADERS)) ctx.set(name, value)
  ctx.body = html
}

function resolveOptions(options: EmbeddedIdPOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options: expected an object, found ${describe(options)}`)
  }
  const { issuer, db, clients, accessTokenAudience } = options

  let issuerURL: URL | undefined
  if (typeof issuer === 'string') issuerURL = URL.parse(issuer) ?? undefined
  if (
    !issuerURL ||
    (issuerURL.protocol !== 'http:' && issuerURL.protocol !== 'https:') ||
    issuerURL.search !== '' ||
    issuerURL.hash !== '' ||
    issuer.includes('?') ||
    issuer.includes('#') ||
    issuer.endsWith('/') ||
    issuerURL.username !== '' ||
    issuerURL.password !== ''
  ) {
    throw new TypeError(
      `options.issuer: expected an http(s) URL without query, fragment or trailing slash, found ${describe(issuer)}`,
    )
  }
  if (db === null || typeof db !== 'object' || typeof (db as { prepare?: unknown }).prepare !== 'function') {
    throw new TypeError(`options.db: expected a node:sqlite DatabaseSync, found ${describe(db)}`)
  }
  if (!Array.isArray(clients) || clients.length === 0) {
    throw new TypeError(`options.clients: expected a non-empty array, found ${describe(clients)}`)
  }
  const seen = new Set<string>()
  clients.forEach((client, index) => {
    const path = `options.clients[${index}]`
    if (client === null || typeof client !== 'object') {
      throw new TypeError(`${path}: expected an object, found ${describe(client)}`)
    }
    if (typeof client.client_id !== 'string' || client.client_id === '' || seen.has(client.client_id)) {
      throw new TypeError(
        `${path}.client_id: expected a unique non-empty string, found ${describe(client.client_id)}`,
      )
    }
    seen.add(client.client_id)
    const method = client.token_endpoint_auth_method ?? 'client_secret_basic'
    const needsSecret = method === 'client_secret_basic' || method === 'client_secret_post'
    if (needsSecret && (typeof client.client_secret !== 'string' || client.client_secret === '')) {
      throw new TypeError(`${path}.client_secret: expected a non-empty string`)
    }
    if (!isURLList(client.redirect_uris, false)) {
      throw new TypeError(
        `${path}.redirect_uris: expected a non-empty array of absolute URLs, found ${describe(client.redirect_uris)}`,
      )
    }
    if (
      client.post_logout_redirect_uris !== undefined &&
      !isURLList(client.post_logout_redirect_uris, true)
    ) {
      throw new TypeError(
        `${path}.post_logout_redirect_uris: expected an array of absolute URLs, found ${describe(client.post_logout_redirect_uris)}`,
      )
    }
  })
  if (typeof accessTokenAudience !== 'string' || accessTokenAudience === '') {
    throw new TypeError(
      `options.accessTokenAudience: expected a non-empty string, found ${describe(accessTokenAudience)}`,
    )
  }

  const mountPath = issuerURL.pathname === '/' ? '' : issuerURL.pathname
  return Object.freeze({
    issuer,
    issuerURL,
    mountPath,
    clients: Object.freeze(clients.map((client) => Object.freeze({ ...client }))),
    accessTokenAudience,
    accessTokenTtlSeconds: ttl(options, 'accessTokenTtlSeconds', 3600),
    idTokenTtlSeconds: ttl(options, 'idTokenTtlSeconds', 3600),
    refreshTokenTtlSeconds: ttl(options, 'refreshTokenTtlSeconds', 14 * 24 * 3600),
    sessionTtlSeconds: ttl(options, 'sessionTtlSeconds', 24 * 3600),
  })
}

type TTLOption =
  | 'accessTokenTtlSeconds'
  | 'idTokenTtlSeconds'
  | 'refreshTokenTtlSeconds'
  | 'sessionTtlSeconds'

function ttl(options: EmbeddedIdPOptions, name: TTLOption, fallback: number): number {
  const value = options[name] ?? fallback
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`options.${name}: expected a positive integer of seconds, found ${describe(value)}`)
  }
  return value
}

function isURLList(value: unknown, mayBeEmpty: boolean): value is string[] {
  return (
    Array.isArray(value) &&
    (mayBeEmpty || value.length > 0) &&
    value.every((item) => typeof item === 'string' && URL.canParse(item))
  )
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value)
  if (Array.isArray(value)) return 'an array'
  if (value === null) return 'null'
  return typeof value === 'object' ? 'an object' : String(value)
}
