// oidc-provider 9 ships no type declarations and @types/oidc-provider is not a dependency. This declares the
// part of its API that src/idp uses, checked against node_modules/oidc-provider/lib (9.13). Members marked
// "mutable" are assigned by the library at run time; everything else is read-only from our side.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'

  /** A stored model as oidc-provider hands it to an adapter (JSON-serialisable). */
  export type AdapterPayload = { [key: string]: unknown }

  /** The storage contract of every oidc-provider model (docs: "adapter"). */
  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number | undefined): Promise<void>
    find(id: string): Promise<AdapterPayload | undefined>
    findByUid(uid: string): Promise<AdapterPayload | undefined>
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>
    consume(id: string): Promise<void>
    destroy(id: string): Promise<void>
    revokeByGrantId(grantId: string): Promise<void>
  }

  /** Called once per model name ("Session", "AccessToken", "Grant", …). Must not be an async function. */
  export type AdapterFactory = (name: string) => Adapter

  export interface ClientMetadata {
    client_id: string
    client_secret?: string
    redirect_uris: string[]
    post_logout_redirect_uris?: string[]
    backchannel_logout_uri?: string
    backchannel_logout_session_required?: boolean
    grant_types?: string[]
    response_types?: string[]
    token_endpoint_auth_method?: string
    id_token_signed_response_alg?: string
  }

  export interface Client {
    readonly clientId: string
    grantTypeAllowed(grantType: string): boolean
  }

  export interface ResourceServer {
    readonly scopes: Set<string>
    identifier(): string
  }

  export interface ResourceServerInfo {
    scope: string
    audience?: string
    accessTokenTTL?: number
    accessTokenFormat?: 'opaque' | 'jwt'
    jwt?: { sign?: { alg?: string; kid?: string } }
  }

  export interface Account {
    accountId: string
    claims(
      use: string,
      scope: string,
    ):
      | { sub: string; [claim: string]: unknown }
      | Promise<{
          sub: string
          [claim: string]: unknown
        }>
  }

  export interface Grant {
    readonly jti?: string
    readonly accountId: string
    readonly clientId: string
    /** Expiry, Unix epoch seconds (set once saved). */
    readonly exp?: number
    getOIDCScopeEncountered(): string
    getOIDCClaimsEncountered(): string[]
    getResourceScopeEncountered(resource: string): string
    addOIDCScope(scope: string): void
    addOIDCClaims(claims: string[]): void
    addResourceScope(resource: string, scope: string): void
    /** Persists the grant and resolves with its id. */
    save(): Promise<string>
  }

  export interface GrantConstructor {
    new (properties: { accountId: string; clientId: string }): Grant
    find(id: string): Promise<Grant | undefined>
  }

  export interface BaseToken {
    /** Seconds until expiry. */
    readonly remainingTTL: number
    readonly scopes: Set<string>
  }

  export interface Session {
    readonly accountId?: string
    readonly uid: string
    grantIdFor(clientId: string): string | undefined
  }

  export interface InteractionResults {
    login?: { accountId: string; remember?: boolean; ts?: number; amr?: string[]; acr?: string }
    consent?: { grantId?: string }
    error?: string
    error_description?: string
    [key: string]: unknown
  }

  export interface PromptDetail {
    readonly name: 'login' | 'consent' | (string & {})
    readonly reasons: string[]
    readonly details: {
      readonly missingOIDCScope?: string[]
      readonly missingOIDCClaims?: string[]
      readonly missingResourceScopes?: { [resource: string]: string[] }
      readonly [key: string]: unknown
    }
  }

  export interface Interaction {
    readonly uid: string
    readonly prompt: PromptDetail
    readonly params: { readonly [key: string]: unknown }
    readonly session?: { readonly accountId?: string; readonly uid?: string }
    readonly grantId?: string
    readonly returnTo: string
    /** Expiry, Unix epoch seconds. */
    readonly exp: number
  }

  export interface OIDCContext {
    readonly client?: Client
    readonly session: Session
    readonly account?: Account
    readonly result?: InteractionResults
    readonly params: { readonly [key: string]: unknown }
    readonly requestParamScopes: Set<string>
    readonly requestParamOIDCScopes: Set<string>
    readonly requestParamClaims: Set<string>
    readonly resourceServers: { readonly [resource: string]: ResourceServer }
    readonly entities: { readonly RotatedRefreshToken?: BaseToken; readonly [name: string]: unknown }
    readonly provider: Provider
  }

  /** The Koa context oidc-provider passes to configuration helpers. Only what src/idp touches. */
  export interface KoaContextWithOIDC {
    body: unknown
    type: string
    status: number
    readonly host: string
    readonly path: string
    readonly method: string
    readonly oidc: OIDCContext
    set(field: string, value: string): void
  }

  export interface ErrorOut {
    readonly error: string
    readonly error_description?: string
    readonly [key: string]: unknown
  }

  /** `ctx` is undefined when a token is saved outside a request. */
  export type TTLFunction = (ctx: KoaContextWithOIDC | undefined, token: BaseToken, client: Client) => number

  export interface CookieOptions {
    httpOnly?: boolean
    sameSite?: 'lax' | 'strict' | 'none'
    path?: string
    secure?: boolean
    signed?: boolean
  }

  export interface Configuration {
    adapter?: AdapterFactory
    clients?: ClientMetadata[]
    clientAuthMethods?: string[]
    responseTypes?: string[]
    scopes?: string[]
    claims?: { [scope: string]: string[] | null }
    conformIdTokenClaims?: boolean
    allowOmittingSingleRegisteredRedirectUri?: boolean
    findAccount?: (ctx: KoaContextWithOIDC, sub: string) => Promise<Account | undefined>
    jwks?: { keys: object[] }
    cookies?: {
      names?: { session?: string; interaction?: string; resume?: string }
      long?: CookieOptions
      short?: CookieOptions
      keys?: string[]
    }
    enabledJWA?: { idTokenSigningAlgValues?: string[] }
    features?: {
      devInteractions?: { enabled: boolean }
      userinfo?: { enabled: boolean }
      revocation?: {
        enabled: boolean
        allowedPolicy?: (
          ctx: KoaContextWithOIDC,
          client: Client,
          token: { clientId?: string },
        ) => Promise<boolean>
      }
      introspection?: { enabled: boolean }
      backchannelLogout?: { enabled: boolean }
      rpInitiatedLogout?: {
        enabled: boolean
        logoutSource?: (ctx: KoaContextWithOIDC, form: string) => Promise<void>
        postLogoutSuccessSource?: (ctx: KoaContextWithOIDC) => Promise<void>
      }
      resourceIndicators?: {
        enabled: boolean
        defaultResource?: (
          ctx: KoaContextWithOIDC,
          client: Client,
          oneOf?: string[],
        ) => Promise<string | string[] | undefined>
        useGrantedResource?: (ctx: KoaContextWithOIDC, model: unknown) => Promise<boolean>
        getResourceServerInfo?: (
          ctx: KoaContextWithOIDC,
          resourceIndicator: string,
          client: Client,
        ) => Promise<ResourceServerInfo>
      }
    }
    pkce?: { required?: (ctx: KoaContextWithOIDC, client: Client) => boolean }
    /** Outgoing requests (back-channel logout); oidc-provider passes an SSRF-guarding `dispatcher`. */
    fetch?: (url: string | URL, options: RequestInit & { dispatcher?: unknown }) => Promise<Response>
    issueRefreshToken?: (ctx: KoaContextWithOIDC, client: Client, code: BaseToken) => Promise<boolean>
    expiresWithSession?: (ctx: KoaContextWithOIDC, code: BaseToken) => Promise<boolean>
    rotateRefreshToken?: boolean | ((ctx: KoaContextWithOIDC) => boolean | Promise<boolean>)
    loadExistingGrant?: (ctx: KoaContextWithOIDC) => Promise<Grant | undefined>
    interactions?: { url?: (ctx: KoaContextWithOIDC, interaction: Interaction) => Promise<string> }
    renderError?: (ctx: KoaContextWithOIDC, out: ErrorOut, error: Error) => Promise<void>
    ttl?: {
      AccessToken?: number | TTLFunction
      AuthorizationCode?: number | TTLFunction
      IdToken?: number | TTLFunction
      RefreshToken?: number | TTLFunction
      Session?: number
      Interaction?: number
      Grant?: number
    }
  }

  class Provider {
    constructor(issuer: string, configuration?: Configuration)
    readonly issuer: string
    /** Koa's `app.proxy`: trust X-Forwarded-Proto / X-Forwarded-Host. Mutable. */
    proxy: boolean
    readonly Grant: GrantConstructor
    /** A Node.js request listener (Koa's `app.callback()`). Routes match on `req.url` with the mount stripped. */
    callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void>
    createContext(req: IncomingMessage, res: ServerResponse): object
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<Interaction>
    interactionFinished(
      req: IncomingMessage,
      res: ServerResponse,
      result: InteractionResults,
      options?: { mergeWithLastSubmission?: boolean },
    ): Promise<void>
    on(event: string, listener: (...args: unknown[]) => void): this
    off(event: string, listener: (...args: unknown[]) => void): this
    emit(event: string, ...args: unknown[]): boolean
  }

  class OIDCProviderError extends Error {
    readonly error: string
    readonly error_description?: string
    readonly status: number
    readonly expose: boolean
  }

  export const errors: {
    readonly OIDCProviderError: typeof OIDCProviderError
    readonly InvalidTarget: new (description?: string, detail?: string) => OIDCProviderError
    readonly SessionNotFound: new (description?: string) => OIDCProviderError
  }

  export { Provider }
  export default Provider
}
