import { X509Certificate } from 'node:crypto'
import type { KeyInfo } from '../keys/key-ring.ts'
import type { TokenRecord } from '../store/ports.ts'
import type { ObservedCertificate } from './tls.ts'

/**
 * The inventory of every credential Gatehouse depends on (seed 002: a certificate expired unnoticed;
 * seed 001: a credential chain hit a hidden maximum). Pure builders: each takes what was observed and
 * returns entries; `now` is always a parameter. Times are seconds since the epoch.
 */

/** Who must act for it to be renewed: Gatehouse itself, the identity provider, the upstream's owner, or the operator. */
export type ExpiryOwner = 'gatehouse' | 'provider' | 'upstream' | 'operator'

export type ExpiryKind =
  | 'signing_key'
  | 'cookie_secret'
  | 'api_tokens'
  | 'provider_key'
  | 'provider_certificate'
  | 'tls_certificate'
  | 'client_secret'
  | 'provider_cache'

export interface ExpiryEntry {
  /** `<kind>:<stable name>`: what people and scripts see (webhook bodies, `/status.json`, the CLI). */
  id: string
  /**
   * What alert records are kept under, when not `id`: a TLS certificate's is its endpoint and fingerprint,
   * so two certificates served in turn by one endpoint (a rolling renewal behind a load balancer) are two
   * credentials, each alerted once, rather than one whose expiry keeps changing (and re-arming).
   */
  alertKey?: string | undefined
  kind: ExpiryKind
  /** What a person recognises: a kid, `host:port`, `session.secrets[0]`… */
  name: string
  owner: ExpiryOwner
  /** Where it was observed: a store table, a URL, a TLS handshake, a config path or file. */
  where: string
  observedAt: number
  /** When it stops working; undefined when nothing says (a JWK without `x5c`, a secret without a maximum age). */
  expiresAt: number | undefined
  /** For things that only age (cookie secrets). */
  ageSeconds?: number | undefined
  /** `automatic`: Gatehouse renews it on a schedule and only a missed renewal is news. */
  renewal: 'automatic' | 'manual'
  /** Automatic ones: the renewal is overdue after this. */
  renewBy?: number | undefined
  detail: string
}

/**
 * - `expired`: past its expiry;
 * - `overdue`: renewed automatically, but the renewal did not happen in time;
 * - `warning`: expires within the warning window;
 * - `ok`: expires later; `automatic`: renewed on schedule; `unknown`: no expiry known.
 */
export type ExpiryStatus = 'expired' | 'overdue' | 'warning' | 'ok' | 'automatic' | 'unknown'

export function assess(entry: ExpiryEntry, now: number, warnSeconds: number): ExpiryStatus {
  // When the expiry is itself the scheduled hand-over (a signing key retiring as its successor takes over),
  // passing it is the plan; only staying past the renewal deadline is news.
  if (
    entry.renewal === 'automatic' &&
    entry.renewBy !== undefined &&
    entry.expiresAt !== undefined &&
    entry.renewBy >= entry.expiresAt
  ) {
    return now > entry.renewBy ? 'overdue' : 'automatic'
  }
  if (entry.expiresAt !== undefined && entry.expiresAt <= now) return 'expired'
  if (entry.renewal === 'automatic') {
    return entry.renewBy !== undefined && now > entry.renewBy ? 'overdue' : 'automatic'
  }
  if (entry.expiresAt === undefined) return 'unknown'
  return entry.expiresAt - now <= warnSeconds ? 'warning' : 'ok'
}

/** Statuses that make `gatehouse expiry` exit 1. */
export function needsAttention(status: ExpiryStatus): boolean {
  return status === 'expired' || status === 'overdue' || status === 'warning'
}

/** Soonest expiry first; entries without one last, by name. */
export function soonestFirst(entries: readonly ExpiryEntry[]): ExpiryEntry[] {
  return [...entries].sort(
    (a, b) =>
      (a.expiresAt ?? Number.POSITIVE_INFINITY) - (b.expiresAt ?? Number.POSITIVE_INFINITY) ||
      a.id.localeCompare(b.id),
  )
}

export const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z')

/** `4d 23h`, `3h 5m`, `12m`, `40s`; negative with a leading `-`. */
export function formatRemaining(seconds: number): string {
  const sign = seconds < 0 ? '-' : ''
  let s = Math.abs(Math.round(seconds))
  const d = Math.floor(s / 86_400)
  s -= d * 86_400
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  if (d > 0) return `${sign}${d}d${h > 0 ? ` ${h}h` : ''}`
  if (h > 0) return `${sign}${h}h${m > 0 ? ` ${m}m` : ''}`
  if (m > 0) return `${sign}${m}m`
  return `${sign}${s}s`
}

/** A renewal Gatehouse does itself is overdue this long after it was due (a tick missed, a store down). */
export const AUTOMATIC_SLACK_SECONDS = 3600

/**
 * Gatehouse's own signing keys. The signing key is renewed automatically: its successor is published
 * `publish_ahead` before it takes over, so a key with a successor is news only when the rotation is
 * overdue. A signing key without a successor is a manual matter (`gatehouse keys rotate`).
 */
export function signingKeyEntries(keys: readonly KeyInfo[], now: number, where: string): ExpiryEntry[] {
  const next = keys.filter((k) => k.state === 'next').sort((a, b) => a.activatesAt - b.activatesAt)
  return keys.map((k): ExpiryEntry => {
    const base = {
      id: `signing_key:${k.kid}`,
      kind: 'signing_key' as const,
      name: k.kid,
      owner: 'gatehouse' as const,
    }
    if (k.state === 'current') {
      const successor = next.find((n) => n.activatesAt <= k.retiresAt)
      return {
        ...base,
        where,
        observedAt: now,
        expiresAt: k.retiresAt,
        renewal: successor === undefined ? 'manual' : 'automatic',
        renewBy: successor === undefined ? undefined : k.retiresAt + AUTOMATIC_SLACK_SECONDS,
        detail:
          successor === undefined
            ? `${k.alg}, signs until ${iso(k.retiresAt)}; no successor published: run gatehouse keys rotate`
            : `${k.alg}, signs until ${iso(k.retiresAt)}, then ${successor.kid} (published) takes over; published until ${iso(k.removeAt)}`,
      }
    }
    if (k.state === 'next') {
      return {
        ...base,
        where,
        observedAt: now,
        expiresAt: k.retiresAt,
        renewal: 'automatic',
        renewBy: k.activatesAt + AUTOMATIC_SLACK_SECONDS,
        detail: `${k.alg}, published ahead; signs from ${iso(k.activatesAt)} until ${iso(k.retiresAt)}`,
      }
    }
    return {
      ...base,
      where,
      observedAt: now,
      expiresAt: k.removeAt,
      renewal: 'automatic',
      renewBy: k.removeAt + AUTOMATIC_SLACK_SECONDS,
      detail: `${k.alg}, retired ${iso(k.retiresAt)}; verifies until ${iso(k.removeAt)}, when the last token it signed has expired, then unpublished`,
    }
  })
}

/**
 * Cookie secrets: nothing expires them, so their age is what is shown (and alerted past `maxAgeSeconds`).
 * Named by their position in the config only: nothing derived from a secret is ever shown (a fingerprint
 * in a metric label or on /status could be tested offline against guesses of a weak secret).
 */
export function cookieSecretEntries(
  secrets: ReadonlyArray<{ index: number; firstSeen: number }>,
  now: number,
  maxAgeSeconds: number | undefined,
): ExpiryEntry[] {
  return secrets.map((s) => ({
    id: `cookie_secret:session.secrets[${s.index}]`,
    kind: 'cookie_secret',
    name: `session.secrets[${s.index}]`,
    owner: 'operator',
    where: 'config session.secrets (first seen recorded in the store)',
    observedAt: now,
    expiresAt: maxAgeSeconds === undefined ? undefined : s.firstSeen + maxAgeSeconds,
    ageSeconds: now - s.firstSeen,
    renewal: 'manual',
    detail: `${s.index === 0 ? 'encrypts and decrypts' : 'decrypts only'}; first seen ${iso(s.firstSeen)}, ${formatRemaining(now - s.firstSeen)} old${maxAgeSeconds === undefined ? '' : `; rotate before ${formatRemaining(maxAgeSeconds)} (session.secret_max_age)`}`,
  }))
}

/**
 * API tokens expiring within `windowSeconds`, one entry per subject (the soonest first): a holder
 * with many tokens gets one line and one alert, not one per token. Revoked and derived tokens
 * (minted from a parent, short-lived by design) are left out.
 */
export function apiTokenEntries(
  tokens: readonly TokenRecord[],
  now: number,
  windowSeconds: number,
): ExpiryEntry[] {
  const bySubject = new Map<string, TokenRecord[]>()
  for (const t of tokens) {
    if (t.revokedAt !== undefined || t.parentJti !== undefined) continue
    if (t.expiresAt <= now - 86_400 || t.expiresAt - now > windowSeconds) continue
    const list = bySubject.get(t.subject) ?? []
    list.push(t)
    bySubject.set(t.subject, list)
  }
  return [...bySubject].map(([subject, list]) => {
    list.sort((a, b) => a.expiresAt - b.expiresAt)
    const first = list[0]!
    const more =
      list.length > 1 ? ` and ${list.length - 1} more within ${formatRemaining(windowSeconds)}` : ''
    return {
      id: `api_tokens:${subject}`,
      kind: 'api_tokens' as const,
      name: subject,
      owner: 'operator' as const,
      where: 'store (API tokens)',
      observedAt: now,
      expiresAt: first.expiresAt,
      renewal: 'manual' as const,
      detail: `token ${first.jti}${first.description === undefined ? '' : ` (${first.description})`}${more}; issue a new one with gatehouse tokens issue`,
    }
  })
}

interface JWK {
  kid?: unknown
  alg?: unknown
  kty?: unknown
  x5c?: unknown
}

/**
 * The provider's signing keys from its JWKS. A key with an `x5c` chain (RFC 7517 §4.7) ends with the
 * earliest certificate of the chain; a bare key has no published end.
 */
export function providerKeyEntries(
  jwks: { keys: readonly unknown[] },
  observedAt: number,
  where: string,
): ExpiryEntry[] {
  return jwks.keys.map((raw, i): ExpiryEntry => {
    const k = (typeof raw === 'object' && raw !== null ? raw : {}) as JWK
    const kid = typeof k.kid === 'string' ? k.kid : `#${i}`
    const alg = typeof k.alg === 'string' ? k.alg : String(k.kty ?? '?')
    const chain = Array.isArray(k.x5c) ? k.x5c.filter((c): c is string => typeof c === 'string') : []
    if (chain.length === 0) {
      return {
        id: `provider_key:${kid}`,
        kind: 'provider_key',
        name: kid,
        owner: 'provider',
        where,
        observedAt,
        expiresAt: undefined,
        renewal: 'manual',
        detail: `${alg}; no expiry published (no x5c)`,
      }
    }
    let end = Number.POSITIVE_INFINITY
    let subject = ''
    let problem: string | undefined
    for (const der of chain) {
      try {
        // RFC 7517 §4.7: base64 (not base64url) DER.
        const cert = new X509Certificate(Buffer.from(der, 'base64'))
        const to = Math.floor(Date.parse(cert.validTo) / 1000)
        if (to < end) {
          end = to
          subject = cert.subject.replaceAll('\n', ', ')
        }
      } catch (err) {
        problem = (err as Error).message
      }
    }
    return {
      id: `provider_certificate:${kid}`,
      kind: 'provider_certificate',
      name: kid,
      owner: 'provider',
      where: `${where} (x5c)`,
      observedAt,
      expiresAt: Number.isFinite(end) ? end : undefined,
      renewal: 'manual',
      detail:
        problem !== undefined && !Number.isFinite(end)
          ? `${alg}; x5c cannot be read: ${problem}`
          : `${alg}; certificate ${subject}${chain.length > 1 ? ` (earliest of ${chain.length} in the chain)` : ''}`,
    }
  })
}

/** A TLS certificate presented by the provider or the upstream, as read from a handshake. */
export function tlsEntry(
  cert: ObservedCertificate,
  owner: 'provider' | 'upstream',
  label: string,
): ExpiryEntry {
  const chainNote =
    cert.chainValidTo < cert.validTo ? `; chain certificate ${cert.chainValidToSubject} ends first` : ''
  const trust = cert.authorized ? 'trusted' : `NOT trusted (${cert.authorizationError ?? 'unknown reason'})`
  return {
    id: `tls_certificate:${cert.host}:${cert.port}`,
    alertKey: `tls_certificate:${cert.host}:${cert.port}#${cert.fingerprint256.replaceAll(':', '').slice(0, 16).toLowerCase()}`,
    kind: 'tls_certificate',
    name: `${label} ${cert.host}:${cert.port}`,
    owner,
    where: `TLS ${cert.how === 'handshake' ? 'handshake' : 'probe'} ${cert.host}:${cert.port}`,
    observedAt: cert.observedAt,
    expiresAt: cert.chainValidTo,
    renewal: 'manual',
    detail: `${cert.subject}, issued by ${cert.issuer}, ${trust}${chainNote}`,
  }
}

/** An endpoint that should present a certificate but could not be read. */
export function unreachableTLSEntry(
  host: string,
  port: number,
  owner: 'provider' | 'upstream',
  label: string,
  why: string,
  now: number,
): ExpiryEntry {
  return {
    id: `tls_certificate:${host}:${port}`,
    kind: 'tls_certificate',
    name: `${label} ${host}:${port}`,
    owner,
    where: `TLS probe ${host}:${port}`,
    observedAt: now,
    expiresAt: undefined,
    renewal: 'manual',
    detail: `not observed: ${why}`,
  }
}

/** Gatehouse's own TLS certificate (config `tls.cert`), as loaded. */
export function ownTLSEntry(chain: readonly X509Certificate[], where: string, now: number): ExpiryEntry {
  let end = Number.POSITIVE_INFINITY
  let subject = ''
  for (const c of chain) {
    const to = Math.floor(Date.parse(c.validTo) / 1000)
    if (to < end) {
      end = to
      subject = c.subject.replaceAll('\n', ', ')
    }
  }
  const leaf = chain[0]!
  return {
    id: 'tls_certificate:gatehouse',
    kind: 'tls_certificate',
    name: 'gatehouse (listen)',
    owner: 'operator',
    where,
    observedAt: now,
    expiresAt: end,
    renewal: 'manual',
    detail: `${leaf.subject.replaceAll('\n', ', ')}, issued by ${leaf.issuer.replaceAll('\n', ', ')}${subject !== leaf.subject.replaceAll('\n', ', ') ? `; ${subject} ends first` : ''}; reloaded when the file changes`,
  }
}

export function clientSecretEntry(clientId: string, expiresAt: number, now: number): ExpiryEntry {
  return {
    id: `client_secret:${clientId}`,
    kind: 'client_secret',
    name: clientId,
    owner: 'operator',
    where: 'config provider.client_secret_expires',
    observedAt: now,
    expiresAt,
    renewal: 'manual',
    detail:
      'the provider stops accepting it: create a new one at the provider, then update provider.client_secret',
  }
}

/**
 * The persisted last-known-good copies of the provider's discovery document and JWKS: refreshed
 * automatically every `refreshAfterSeconds`; if refreshing stops (the provider is down), a copy
 * still serves until `fetchedAt + staleIfErrorSeconds`.
 */
export function providerCacheEntry(
  what: 'discovery' | 'jwks',
  fetchedAt: number,
  now: number,
  refreshAfterSeconds: number,
  staleIfErrorSeconds: number,
  where: string,
): ExpiryEntry {
  return {
    id: `provider_cache:${what}`,
    kind: 'provider_cache',
    name: what === 'jwks' ? 'provider JWKS copy' : 'provider discovery copy',
    owner: 'gatehouse',
    where,
    observedAt: now,
    expiresAt: fetchedAt + staleIfErrorSeconds,
    renewal: 'automatic',
    renewBy: fetchedAt + 2 * refreshAfterSeconds + 60,
    detail: `fetched ${iso(fetchedAt)} (${formatRemaining(now - fetchedAt)} ago), refreshed every ${formatRemaining(refreshAfterSeconds)}; if the provider stays down it serves until ${iso(fetchedAt + staleIfErrorSeconds)}`,
  }
}
