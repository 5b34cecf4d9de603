import type { JWK, JWTVerifyGetKey } from 'jose'
import { importJWK, importPKCS8, jwtVerify } from 'jose'
import * as oauth from 'oauth4webapi'
import type { Clock } from '../core/clock.ts'
import {
  ClientMisconfiguredError,
  ProviderRejectedError,
  ProviderResponseError,
  ProviderUnavailableError,
} from '../core/errors.ts'
import { type OIDCPort, silentLogger, type TokenResult } from '../core/ports.ts'
import { createProviderCache, type ProviderCache } from '../keys/provider-cache.ts'
import { createMemoryStore } from '../store/memory-store.ts'

export type ProviderPreset = 'generic' | 'cognito'

export interface OIDCClientOptions {
  issuer: string
  clientId: string
  /** With client_secret_basic or client_secret_post. */
  clientSecret?: string | undefined
  /** Default: from discovery (client_secret_basic, else client_secret_post, with a secret; `none` without). */
  clientAuth?: ClientAuthMethod | undefined
  /** private_key_jwt's key (see importClientKey). */
  clientKey?: oauth.PrivateKey | undefined
  /** Gatehouse's callback URL, registered at the provider (exact match, RFC 9700 §4.1.3). */
  redirectUri: string
  scopes: readonly string[]
  preset: ProviderPreset
  /** Cognito: the hosted UI domain's logout URL (`https://<domain>/logout`); overrides discovery. */
  endSessionUrl?: string | undefined
  /** Put the ID token in the sign-out URL (`id_token_hint`); default false: `client_id` and `logout_hint`. */
  logoutIdTokenHint?: boolean | undefined
  /** ID token algorithms accepted. */
  algorithms: readonly string[]
  /** Every call to the provider gives up after this long. */
  timeoutMs: number
  clock: Clock
  /** Injected for tests; defaults to the global fetch. */
  fetch?: typeof fetch
  /** The provider's metadata and keys; default an in-memory cache (nothing persisted). */
  cache?: ProviderCache | undefined
}

export interface OIDCClient extends OIDCPort {
  /** The provider's metadata (from the provider cache). */
  metadata(): Promise<oauth.AuthorizationServer>
  /** The provider's signing keys, shared with the bearer-token verifier. */
  keys(): Promise<JWTVerifyGetKey>
}

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none'

/** private_key_jwt's signing key: PEM (PKCS #8) or a JWK (whose own `alg` and `kid` win). */
export async function importClientKey(text: string, alg: string): Promise<oauth.PrivateKey> {
  const trimmed = text.trim()
  try {
    if (trimmed.startsWith('{')) {
      const jwk = JSON.parse(trimmed) as JWK
      const key = await importJWK(jwk, jwk.alg ?? alg)
      if (key instanceof Uint8Array || key.type !== 'private') throw new TypeError('not a private key')
      return jwk.kid === undefined ? { key } : { key, kid: jwk.kid }
    }
    return { key: await importPKCS8(trimmed, alg) }
  } catch (err) {
    throw new TypeError(
      `provider.client_key: cannot import it as a ${alg} private key (${(err as Error).message})`,
    )
  }
}

/**
 * client_secret_basic. RFC 6749 §2.3.1 form-encodes the client id and secret before Basic (RFC 7617);
 * oauth4webapi escapes everything but letters and digits (HTML 4.01's form encoding), and providers that
 * do not decode (glewlwyd, HCL Domino…) then refuse a secret with `-`, `.`, `_` or `~`. A provider that
 * decodes reads the same value whether those are escaped or not, so only what decoding would change is:
 * `%`, `+`, anything not printable ASCII, and `:` in the client id, where it would end the user-id.
 */
function clientSecretBasic(secret: string): oauth.ClientAuth {
  const part = (value: string, pattern: RegExp) => value.replace(pattern, (c) => encodeURIComponent(c))
  return (_as, client, _body, headers) => {
    const user = part(client.client_id, /[^\x21-\x7e]|[%+:]/gu)
    headers.set('authorization', `Basic ${btoa(`${user}:${part(secret, /[^\x21-\x7e]|[%+]/gu)}`)}`)
  }
}

function isLoopback(url: URL): boolean {
  return url.hostname === 'localhost' || url.hostname === '127.0.0.1' || url.hostname === '[::1]'
}

function toProviderError(err: unknown, what: string): Error {
  if (
    err instanceof ClientMisconfiguredError ||
    err instanceof ProviderRejectedError ||
    err instanceof ProviderUnavailableError ||
    err instanceof ProviderResponseError
  ) {
    return err
  }
  if (err instanceof oauth.ResponseBodyError) {
    if (err.status >= 500)
      return new ProviderUnavailableError(`${what}: provider answered ${err.status}`, { cause: err })
    // RFC 6749 §5.2: our own credentials or registration, not the user's sign-in.
    if (err.error === 'invalid_client' || err.error === 'unauthorized_client')
      return new ClientMisconfiguredError(
        err.error,
        `${what}: provider refused the client with ${err.error}`,
        {
          cause: err,
        },
      )
    return new ProviderRejectedError(err.error, `${what}: provider refused with ${err.error}`, { cause: err })
  }
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    return new ClientMisconfiguredError(
      'invalid_client',
      `${what}: provider challenged the client (${err.status})`,
      { cause: err },
    )
  }
  if (err instanceof oauth.OperationProcessingError) {
    return new ProviderResponseError(`${what}: ${err.code ?? 'check failed'}: ${err.message}`, { cause: err })
  }
  const name = (err as Error)?.name
  if (name === 'TimeoutError' || name === 'AbortError' || err instanceof TypeError) {
    return new ProviderUnavailableError(
      `${what}: ${name === 'TimeoutError' ? 'timed out' : (err as Error).message}`,
      { cause: err },
    )
  }
  return new ProviderResponseError(`${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
}

/** A 5xx, or a body that is not what a provider sends, means "unavailable", not "refused". */
function assertAvailable(response: Response, what: string): Response {
  if (response.status >= 500)
    throw new ProviderUnavailableError(`${what}: provider answered ${response.status}`)
  return response
}

/**
 * The relying-party half of OpenID Connect on oauth4webapi: discovery, authorization URL, code
 * exchange with PKCE, refresh, revocation, end-session. Each exchange is split the oauth4webapi way
 * (`xxxRequest` sends, `processXxxResponse` checks); the ID token's signature is also verified with
 * jose against the provider's JWKS.
 */
export function createOIDCClient(options: OIDCClientOptions): OIDCClient {
  const issuer = new URL(options.issuer)
  const insecure = issuer.protocol === 'http:'
  if (insecure && !isLoopback(issuer)) throw new TypeError('issuer: must be https (http only for loopback)')
  const client: oauth.Client = { client_id: options.clientId }
  // The method, once discovery is known; chosen again only if the discovery document changes.
  let auth: { for: oauth.AuthorizationServer; auth: oauth.ClientAuth } | undefined
  function clientAuth(as: oauth.AuthorizationServer): oauth.ClientAuth {
    if (auth?.for !== as) auth = { for: as, auth: chooseClientAuth(as) }
    return auth.auth
  }
  function chooseClientAuth(as: oauth.AuthorizationServer): oauth.ClientAuth {
    // RFC 8414 §2: a provider that says nothing supports client_secret_basic.
    const supported = as.token_endpoint_auth_methods_supported ?? ['client_secret_basic']
    const method =
      options.clientAuth ??
      (options.clientSecret === undefined
        ? 'none'
        : supported.includes('client_secret_basic')
          ? 'client_secret_basic'
          : supported.includes('client_secret_post')
            ? 'client_secret_post'
            : undefined)
    if (method === undefined)
      throw new ClientMisconfiguredError(
        'unsupported_auth_method',
        `the provider supports neither client_secret_basic nor client_secret_post (${supported.join(', ')}): set provider.client_auth`,
      )
    const secret = () => {
      if (options.clientSecret === undefined)
        throw new ClientMisconfiguredError(
          'missing_credentials',
          `provider.client_secret: required by ${method}`,
        )
      return options.clientSecret
    }
    switch (method) {
      case 'client_secret_basic':
        return clientSecretBasic(secret())
      case 'client_secret_post':
        return oauth.ClientSecretPost(secret())
      case 'private_key_jwt':
        if (options.clientKey === undefined)
          throw new ClientMisconfiguredError(
            'missing_credentials',
            'provider.client_key: required by private_key_jwt',
          )
        return oauth.PrivateKeyJwt(options.clientKey)
      case 'none':
        return oauth.None()
    }
  }
  const fetchImpl = options.fetch ?? fetch
  // One options object shape for every call; `as never` because oauth4webapi types customFetch per call kind.
  const http = () => ({
    signal: AbortSignal.timeout(options.timeoutMs),
    [oauth.customFetch]: fetchImpl as never,
    [oauth.allowInsecureRequests]: insecure,
  })
  // Discovery and keys come from the provider cache: in memory, refreshed before they age out, kept
  // through a failed refresh, persisted when the cache has a durable store.
  const cache =
    options.cache ??
    createProviderCache({
      issuer: options.issuer,
      clock: options.clock,
      log: silentLogger,
      store: createMemoryStore(),
      timeoutMs: options.timeoutMs,
      fetch: fetchImpl,
    })
  const metadata = () => cache.metadata()
  const keys = async (): Promise<JWTVerifyGetKey> => cache.getKey

  async function verifyIdToken(
    idToken: string | undefined,
    required: boolean,
  ): Promise<Record<string, unknown> | undefined> {
    if (idToken === undefined) {
      if (required) throw new ProviderResponseError('token response has no id_token')
      return undefined
    }
    try {
      const { payload } = await jwtVerify(idToken, await keys(), {
        issuer: (await metadata()).issuer,
        audience: options.clientId,
        algorithms: [...options.algorithms],
      })
      return payload
    } catch (err) {
      if (err instanceof ProviderUnavailableError) throw err
      const code = (err as { code?: string }).code
      if (code === 'ERR_JWKS_TIMEOUT')
        throw new ProviderUnavailableError('JWKS fetch timed out', { cause: err })
      throw new ProviderResponseError(`ID token signature: ${code ?? ''} ${(err as Error).message}`, {
        cause: err,
      })
    }
  }

  function tokenResult(
    r: oauth.TokenEndpointResponse,
    claims: Record<string, unknown> | undefined,
  ): TokenResult {
    const now = Math.floor(options.clock.now() / 1000)
    // Without expires_in the access token is treated as short-lived (5 minutes), never as eternal.
    const expiresIn = typeof r.expires_in === 'number' && r.expires_in > 0 ? r.expires_in : 300
    return {
      accessToken: r.access_token,
      accessTokenExpiresAt: now + expiresIn,
      refreshToken: r.refresh_token,
      idToken: r.id_token,
      claims,
    }
  }

  return {
    metadata,
    keys,

    async authorizationUrl({ state, nonce, codeChallenge }) {
      // Sending a browser to a provider that is not answering only trades our clear 503 page for the
      // browser's connection error. A stale copy alone says nothing about now: ask the provider (through
      // the breaker, which bounds how often a crowd of sign-ins can) and refuse only if it still fails.
      if (cache.status().stale) await cache.revalidate()
      const as = await metadata()
      if (as.authorization_endpoint === undefined)
        throw new ProviderResponseError('discovery: no authorization_endpoint')
      const url = new URL(as.authorization_endpoint)
      url.searchParams.set('client_id', options.clientId)
      url.searchParams.set('redirect_uri', options.redirectUri)
      url.searchParams.set('response_type', 'code')
      url.searchParams.set('scope', options.scopes.join(' '))
      url.searchParams.set('state', state)
      url.searchParams.set('nonce', nonce)
      url.searchParams.set('code_challenge', codeChallenge)
      url.searchParams.set('code_challenge_method', 'S256')
      return url.href
    },

    async exchangeCode(params, expected) {
      try {
        const as = await metadata()
        const validated = oauth.validateAuthResponse(as, client, params, expected.state)
        const response = assertAvailable(
          await oauth.authorizationCodeGrantRequest(
            as,
            client,
            clientAuth(as),
            validated,
            options.redirectUri,
            expected.codeVerifier,
            http(),
          ),
          'code exchange',
        )
        const result = await oauth.processAuthorizationCodeResponse(as, client, response, {
          expectedNonce: expected.nonce,
          requireIdToken: true,
        })
        return tokenResult(result, await verifyIdToken(result.id_token, true))
      } catch (err) {
        throw toProviderError(err, 'code exchange')
      }
    },

    async refresh(refreshToken) {
      try {
        const as = await metadata()
        const response = assertAvailable(
          await oauth.refreshTokenGrantRequest(as, client, clientAuth(as), refreshToken, http()),
          'refresh',
        )
        const result = await oauth.processRefreshTokenResponse(as, client, response)
        return tokenResult(result, await verifyIdToken(result.id_token, false))
      } catch (err) {
        throw toProviderError(err, 'refresh')
      }
    },

    async endSessionUrl({ idTokenHint, logoutHint, postLogoutRedirectUri }) {
      // RP-Initiated Logout 1.0 §2: client_id identifies the client without an ID token in the URL (where
      // it would reach browser history, proxies and the provider's access logs).
      const hints = (url: URL) => {
        url.searchParams.set('client_id', options.clientId)
        url.searchParams.set('post_logout_redirect_uri', postLogoutRedirectUri)
        if (logoutHint !== undefined) url.searchParams.set('logout_hint', logoutHint)
        if (options.logoutIdTokenHint === true && idTokenHint !== undefined)
          url.searchParams.set('id_token_hint', idTokenHint)
        return url.href
      }
      if (options.preset === 'cognito' || options.endSessionUrl !== undefined) {
        if (options.endSessionUrl === undefined) return undefined
        const url = new URL(options.endSessionUrl)
        // Cognito's non-standard logout: /logout?client_id=&logout_uri=
        if (options.preset === 'cognito') {
          url.searchParams.set('client_id', options.clientId)
          url.searchParams.set('logout_uri', postLogoutRedirectUri)
          return url.href
        }
        return hints(url)
      }
      const as = await metadata()
      if (as.end_session_endpoint === undefined) return undefined
      return hints(new URL(as.end_session_endpoint))
    },

    async revoke(token) {
      try {
        const as = await metadata()
        if (as.revocation_endpoint === undefined) return
        const response = await oauth.revocationRequest(as, client, clientAuth(as), token, http())
        await oauth.processRevocationResponse(response)
      } catch (err) {
        throw toProviderError(err, 'revocation')
      }
    },
  }
}
