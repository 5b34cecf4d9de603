/**
 * Every error Gatehouse raises carries a stable `code` (never reused, like jose's `ERR_JWT_EXPIRED` or
 * fastify's `FST_ERR_*`). `expose` is what may be shown to a client; `message` is for the log.
 */
export class GatehouseError extends Error {
  readonly code: string
  /** Short text safe to show to a client. Never contains a token, secret or cookie. */
  readonly expose: string

  constructor(code: string, message: string, expose?: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'GatehouseError'
    this.code = code
    this.expose = expose ?? message
  }
}

/** The identity provider answered, but refused (for example `invalid_grant` on refresh). */
export class ProviderRejectedError extends GatehouseError {
  override readonly name = 'ProviderRejectedError'
  /** The OAuth error code the provider returned, such as `invalid_grant`. */
  readonly oauthError: string
  constructor(oauthError: string, message: string, options?: { cause?: unknown }) {
    super('ERR_PROVIDER_REJECTED', message, 'The identity provider refused the request', options)
    this.oauthError = oauthError
  }
}

/** The identity provider could not be reached, timed out, answered 5xx or something unreadable. */
export class ProviderUnavailableError extends GatehouseError {
  override readonly name: string = 'ProviderUnavailableError'
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROVIDER_UNAVAILABLE', message, 'The sign-in service is unavailable', options)
  }
}

/**
 * Gatehouse's own cap on provider calls is full (every slot busy and the queue full, or the queue's
 * deadline passed): the provider was not called. Answered with 503 and a short Retry-After, so a
 * crowd of clients cannot pile calls onto a provider that is already slow (seed 003).
 */
export class ProviderBusyError extends ProviderUnavailableError {
  override readonly name = 'ProviderBusyError'
  override readonly code: string = 'ERR_PROVIDER_BUSY'
  /** When a retry is worth making. */
  readonly retryAfterSeconds: number
  constructor(message: string, retryAfterSeconds: number) {
    super(message)
    this.retryAfterSeconds = retryAfterSeconds
  }
}

/**
 * The provider refused Gatehouse's own client credentials (`invalid_client`, `unauthorized_client`, or a
 * 401 challenge at the token endpoint): the gateway is misconfigured, not the user refused.
 */
export class ClientMisconfiguredError extends GatehouseError {
  override readonly name = 'ClientMisconfiguredError'
  /** The OAuth error code the provider returned. */
  readonly oauthError: string
  constructor(oauthError: string, message: string, options?: { cause?: unknown }) {
    super('ERR_CLIENT_MISCONFIGURED', message, "The gateway's sign-in client is misconfigured", options)
    this.oauthError = oauthError
  }
}

/** The provider's answer failed a check (ID token signature, nonce, issuer, audience...). */
export class ProviderResponseError extends GatehouseError {
  override readonly name = 'ProviderResponseError'
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROVIDER_RESPONSE', message, 'The sign-in answer could not be verified', options)
  }
}
