/** Who a verified request belongs to: what the upstream learns through the identity headers. */
export interface Identity {
  /** The provider's subject identifier. */
  sub: string
  /** The value of the configured user claim (default `sub`). */
  user: string
  email?: string | undefined
  groups: readonly string[]
  preferredUsername?: string | undefined
  name?: string | undefined
  /**
   * The scopes of the bearer token that authenticated the request (`scope` or `scp`); undefined for a
   * browser session, which has none. Sent as X-Auth-Request-Scopes.
   */
  scopes?: readonly string[] | undefined
}

export interface IdentityMapping {
  /** Claim that becomes X-Auth-Request-User. Default `sub`. */
  userClaim: string
  /** Claim holding group names. Default `groups` (`cognito:groups` for the Cognito preset). */
  groupsClaim: string
}

function optionalString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined
}

/** Maps verified token claims to an Identity. Returns undefined when `sub` is missing. */
export function identityFromClaims(
  claims: Record<string, unknown>,
  mapping: IdentityMapping,
): Identity | undefined {
  const sub = optionalString(claims['sub'])
  if (sub === undefined) return undefined
  const rawGroups = claims[mapping.groupsClaim]
  const groups = Array.isArray(rawGroups)
    ? rawGroups.filter((g): g is string => typeof g === 'string')
    : typeof rawGroups === 'string'
      ? [rawGroups]
      : []
  return {
    sub,
    user: optionalString(claims[mapping.userClaim]) ?? sub,
    email: optionalString(claims['email']),
    groups,
    preferredUsername: optionalString(claims['preferred_username']) ?? optionalString(claims['username']),
    name: optionalString(claims['name']),
  }
}

/**
 * An access token's scopes: the `scope` claim, a space-separated string (RFC 9068 §2.2.3, RFC 8693 §4.2),
 * or `scp`, an array (Entra ID, Okta) or a string. Empty when it has neither.
 */
export function scopesFromClaims(claims: Record<string, unknown>): readonly string[] {
  const raw = claims['scope'] ?? claims['scp']
  const list = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw : []
  // Only RFC 6749 scope tokens, each on its own: an `scp` element "x write" must not be checked as one
  // scope and then sent upstream as two.
  return list.flatMap((s) => (typeof s === 'string' ? s.split(' ') : [])).filter((s) => SCOPE_TOKEN.test(s))
}

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/

// Header values must not carry control characters (CR/LF would split headers).
function headerSafe(value: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  return value.replace(/[\u0000-\u001f\u007f]/g, '')
}

const headersOf = new WeakMap<Identity, Readonly<Record<string, string>>>()

/**
 * The identity headers sent upstream (the convention of nginx auth_request and oauth2-proxy).
 * Computed once per identity object (sessions and tokens are cached, so their identity is too);
 * the result is frozen: copy it before adding to it.
 */
export function identityHeaders(identity: Identity): Readonly<Record<string, string>> {
  let h = headersOf.get(identity)
  if (h === undefined) {
    h = Object.freeze(buildIdentityHeaders(identity))
    headersOf.set(identity, h)
  }
  return h
}

function buildIdentityHeaders(identity: Identity): Record<string, string> {
  const h: Record<string, string> = { 'x-auth-request-user': headerSafe(identity.user) }
  if (identity.email !== undefined) h['x-auth-request-email'] = headerSafe(identity.email)
  if (identity.groups.length > 0) h['x-auth-request-groups'] = headerSafe(identity.groups.join(','))
  if (identity.preferredUsername !== undefined) {
    h['x-auth-request-preferred-username'] = headerSafe(identity.preferredUsername)
  }
  // Like the others, only when there is something to say: a session has no scopes (clients' own copies
  // are always dropped, and forward-auth answers it empty).
  if (identity.scopes !== undefined && identity.scopes.length > 0) {
    h['x-auth-request-scopes'] = headerSafe(identity.scopes.join(' '))
  }
  return h
}
