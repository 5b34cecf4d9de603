import type { Logger } from './ports.ts'

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
  /**
   * The claims named in `identity.headers_from_claims`, by claim name, already as header text (see
   * {@link claimsForHeaders}). Only those: a session keeps them in its cookie.
   */
  claims?: Readonly<Record<string, string>> | undefined
  /**
   * The name of the provider that signed the user in, with a config `providers` list (docs/providers.md);
   * undefined with a lone `provider`. Sent as X-Auth-Request-Provider: the same `sub` at two providers is
   * two people.
   */
  provider?: string | undefined
}

export interface IdentityMapping {
  /** Claim that becomes X-Auth-Request-User. Default `sub`. */
  userClaim: string
  /** Claim holding group names. Default `groups` (`cognito:groups` for the Cognito preset). */
  groupsClaim: string
  /**
   * `identity.headers_from_claims`: `[header name, claim]` pairs, header names in lower case. Each header
   * carries that claim's value upstream; a client's copy of it is always dropped.
   */
  claimHeaders?: ReadonlyArray<readonly [header: string, claim: string]> | undefined
}

/** `identity.headers_from_claims` as {@link IdentityMapping.claimHeaders}: header names in lower case. */
export function claimHeadersOf(config: Readonly<Record<string, string>>): Array<[string, string]> {
  return Object.entries(config).map(([header, claim]) => [header.toLowerCase(), claim])
}

/** The longest claim header value, in bytes: longer values are cut (at a UTF-8 character boundary). */
export const CLAIM_HEADER_MAX_BYTES = 1024

function optionalString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined
}

/**
 * Maps verified token claims to an Identity. Returns undefined when `sub` is missing. `log` hears (at
 * debug) of a configured claim that cannot be a header value.
 */
export function identityFromClaims(
  claims: Record<string, unknown>,
  mapping: IdentityMapping,
  log?: Logger,
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
    claims: claimsForHeaders(claims, mapping.claimHeaders, log),
  }
}

/**
 * The claims that `claimHeaders` names, as header text: a string as it is, a number or boolean as JSON
 * writes it, an array of those joined with `,`. Control characters (CR and LF among them) are removed,
 * characters past ASCII sent as their UTF-8 bytes, and the value cut at {@link CLAIM_HEADER_MAX_BYTES}.
 * An object (or an array holding one) is skipped, with a debug line; an absent, null or empty claim too.
 * Undefined when nothing is left.
 *
 * @example
 * claimsForHeaders({ department: 'R&D', teams: ['a', 'b'] }, [['x-user-department', 'department'], ['x-teams', 'teams']])
 * // { department: 'R&D', teams: 'a,b' }
 */
export function claimsForHeaders(
  claims: Record<string, unknown>,
  claimHeaders: IdentityMapping['claimHeaders'],
  log?: Logger,
): Record<string, string> | undefined {
  if (claimHeaders === undefined || claimHeaders.length === 0) return undefined
  const out = new Map<string, string>()
  for (const [, claim] of claimHeaders) {
    // Own properties only: a claim named `constructor` is not Object.prototype's.
    if (out.has(claim) || !Object.hasOwn(claims, claim)) continue
    const raw = claims[claim]
    if (raw === undefined || raw === null) continue
    const list = Array.isArray(raw) ? raw : [raw]
    if (!list.every(isScalar)) {
      log?.debug(
        { code: 'claim_not_passed', claim, reason: Array.isArray(raw) ? 'array of non-scalars' : typeof raw },
        'a claim in identity.headers_from_claims is not a string, number, boolean or array of them: not sent',
      )
      continue
    }
    const text = headerBytes(list.map(String).join(','))
    if (text !== '') out.set(claim, text)
  }
  // fromEntries defines own properties: `__proto__` is a claim name like any other.
  return out.size === 0 ? undefined : Object.fromEntries(out)
}

function isScalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))
}

// A claim header's value: as every identity header's, trimmed, and cut at CLAIM_HEADER_MAX_BYTES, never
// inside a character.
function headerBytes(value: string): string {
  const text = headerSafe(value, true)
  if (text.length <= CLAIM_HEADER_MAX_BYTES) return text
  let end = CLAIM_HEADER_MAX_BYTES
  // A UTF-8 continuation byte (10xxxxxx) cannot start a character.
  while (end > 0 && (text.charCodeAt(end) & 0xc0) === 0x80) end--
  return text.slice(0, end)
}
const NON_ASCII = /[^\x20-\x7e]/

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

/**
 * An identity value as a header value: without control characters (CR/LF would split headers), and as
 * bytes (RFC 9110 §5.5): a character past ASCII goes as its UTF-8 bytes, one latin1 character each, which
 * every adapter's HTTP stack writes as they are (a character past U+00FF would make them refuse the whole
 * request: a user named 王小明 got 502 on every request). Upstreams read them as UTF-8, as behind
 * oauth2-proxy or Pomerium.
 */
function headerSafe(value: string, trim = false): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  let text = value.replace(/[\u0000-\u001f\u007f]/g, '')
  // Before encoding: trim() also takes U+00A0, which is a byte of many encoded characters.
  if (trim) text = text.trim()
  if (!NON_ASCII.test(text)) return text
  let bytes = ''
  for (const b of new TextEncoder().encode(text)) bytes += String.fromCharCode(b)
  return bytes
}

/**
 * Builds {@link identityHeaders} with the claim headers of `identity.headers_from_claims` (lower-case
 * names) after the fixed ones. Each call has its own cache.
 */
export function createIdentityHeaders(
  claimHeaders: IdentityMapping['claimHeaders'] = [],
): (identity: Identity) => Readonly<Record<string, string>> {
  const headersOf = new WeakMap<Identity, Readonly<Record<string, string>>>()
  return function identityHeaders(identity) {
    let h = headersOf.get(identity)
    if (h === undefined) {
      const built = buildIdentityHeaders(identity)
      const claims = identity.claims
      if (claims !== undefined) {
        for (const [header, claim] of claimHeaders) {
          if (Object.hasOwn(claims, claim)) built[header] = claims[claim]!
        }
      }
      h = Object.freeze(built)
      headersOf.set(identity, h)
    }
    return h
  }
}

/**
 * The identity headers sent upstream (the convention of nginx auth_request and oauth2-proxy).
 * Computed once per identity object (sessions and tokens are cached, so their identity is too);
 * the result is frozen: copy it before adding to it.
 */
export const identityHeaders: (identity: Identity) => Readonly<Record<string, string>> =
  createIdentityHeaders()

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
  if (identity.provider !== undefined) h['x-auth-request-provider'] = identity.provider
  return h
}
