import { createHmac, type X509Certificate } from 'node:crypto'
import type { Config } from '../config/schema.ts'
import type { KeyInfo } from '../keys/key-ring.ts'
import { providerCacheKeys } from '../keys/provider-cache.ts'
import type { AlertStore, CacheStore, TokenStore } from '../store/ports.ts'
import {
  apiTokenEntries,
  clientSecretEntry,
  cookieSecretEntries,
  type ExpiryEntry,
  ownTLSEntry,
  providerCacheEntry,
  providerKeyEntries,
  signingKeyEntries,
  soonestFirst,
  tlsEntry,
  unreachableTLSEntry,
} from './inventory.ts'
import { type ObservedCertificate, probeTLS, type TLSObserver } from './tls.ts'

export interface Inventory {
  generatedAt: number
  entries: ExpiryEntry[]
}

/** An endpoint whose TLS certificate Gatehouse depends on. */
export interface TLSTarget {
  host: string
  port: number
  owner: 'provider' | 'upstream'
  label: string
}

function targetOf(url: string, owner: TLSTarget['owner'], label: string): TLSTarget | undefined {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return undefined
  }
  if (u.protocol !== 'https:') return undefined
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) || 443, owner, label }
}

/** The https endpoints of the provider (issuer, JWKS, token endpoint) and the upstream, one per host:port. */
export function tlsTargets(config: Config, discovery: Record<string, unknown> | undefined): TLSTarget[] {
  const candidates = [
    targetOf(config.provider.issuer, 'provider', 'provider'),
    ...['jwks_uri', 'token_endpoint'].map((k) =>
      typeof discovery?.[k] === 'string'
        ? targetOf(discovery[k] as string, 'provider', 'provider')
        : undefined,
    ),
    targetOf(config.upstream, 'upstream', 'upstream'),
  ]
  const seen = new Map<string, TLSTarget>()
  for (const t of candidates)
    if (t !== undefined && !seen.has(`${t.host}:${t.port}`)) seen.set(`${t.host}:${t.port}`, t)
  return [...seen.values()]
}

/**
 * A short, stable name for a secret that reveals nothing of it (an HMAC under a fixed label), so its
 * first-seen time can be kept in the store and shown without the secret.
 */
export function secretFingerprint(secret: string): string {
  return createHmac('sha256', 'gatehouse secret fingerprint v1')
    .update(secret)
    .digest('base64url')
    .slice(0, 10)
}

export interface CollectOptions {
  config: Config
  now: number
  store: CacheStore & TokenStore & Partial<Pick<AlertStore, 'markSeen'>>
  keys: readonly KeyInfo[]
  /** The resolved session secrets, in config order (only their fingerprints leave this function). */
  sessionSecrets: readonly string[]
  /** API tokens expiring within this are listed. */
  warnSeconds: number
  tls: {
    observer: TLSObserver
    /** Probe endpoints not seen in a handshake for `maxAgeSeconds`; false: offline. */
    probe: boolean
    maxAgeSeconds: number
    probeTimeoutMs?: number
  }
  /** Gatehouse's own certificate chain as served, or why it could not be read. */
  ownTLS?: { chain: readonly X509Certificate[]; where: string } | { error: string; where: string } | undefined
}

function parseJSON(value: string | undefined): Record<string, unknown> | undefined {
  if (value === undefined) return undefined
  try {
    const v: unknown = JSON.parse(value)
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/**
 * Takes the inventory: own signing keys and cookie secrets, API tokens expiring soon, the provider's keys
 * and certificates from the persisted JWKS, TLS certificates read from handshakes (or probes), the client
 * secret's configured expiry, the provider copies. Reads only the store and the network it is allowed to.
 */
export async function collectInventory(o: CollectOptions): Promise<Inventory> {
  const { config, now, store } = o
  const entries: ExpiryEntry[] = []
  entries.push(...signingKeyEntries(o.keys, now, 'store (signing keys)'))

  const secrets = []
  for (const [index, secret] of o.sessionSecrets.entries()) {
    const fingerprint = secretFingerprint(secret)
    const firstSeen = (await store.markSeen?.(`cookie_secret:${fingerprint}`, now)) ?? now
    secrets.push({ index, fingerprint, firstSeen })
  }
  entries.push(...cookieSecretEntries(secrets, now, config.session.secret_max_age))

  entries.push(...apiTokenEntries(await store.listTokens({ now: now - 86_400 }), now, o.warnSeconds))

  const keys = providerCacheKeys(config.provider.issuer)
  const discovery = await store.getCached(keys.discovery)
  const jwks = await store.getCached(keys.jwks)
  const discoveryDoc = parseJSON(discovery?.value)
  const cache = config.provider.cache
  if (discovery !== undefined) {
    entries.push(
      providerCacheEntry(
        'discovery',
        discovery.fetchedAt,
        now,
        cache.refresh_after,
        cache.stale_if_error,
        'store (provider copies)',
      ),
    )
  }
  if (jwks !== undefined) {
    entries.push(
      providerCacheEntry(
        'jwks',
        jwks.fetchedAt,
        now,
        cache.refresh_after,
        cache.stale_if_error,
        'store (provider copies)',
      ),
    )
    const set = parseJSON(jwks.value)
    if (set !== undefined && Array.isArray(set['keys'])) {
      const uri = typeof discoveryDoc?.['jwks_uri'] === 'string' ? discoveryDoc['jwks_uri'] : 'provider JWKS'
      entries.push(...providerKeyEntries({ keys: set['keys'] as unknown[] }, jwks.fetchedAt, uri))
    }
  }

  for (const target of tlsTargets(config, discoveryDoc)) {
    let cert: ObservedCertificate | undefined = o.tls.observer.get(target.host, target.port)
    let why = 'no connection made yet'
    if (o.tls.probe && (cert === undefined || now - cert.observedAt > o.tls.maxAgeSeconds)) {
      try {
        cert = await probeTLS(target.host, target.port, { nowSeconds: now, timeoutMs: o.tls.probeTimeoutMs })
        o.tls.observer.record(cert)
      } catch (err) {
        why = (err as Error).message
      }
    }
    entries.push(
      cert === undefined
        ? unreachableTLSEntry(target.host, target.port, target.owner, target.label, why, now)
        : tlsEntry(cert, target.owner, target.label),
    )
  }

  if (o.ownTLS !== undefined) {
    if ('chain' in o.ownTLS) entries.push(ownTLSEntry(o.ownTLS.chain, o.ownTLS.where, now))
    else {
      entries.push({
        id: 'tls_certificate:gatehouse',
        kind: 'tls_certificate',
        name: 'gatehouse (listen)',
        owner: 'operator',
        where: o.ownTLS.where,
        observedAt: now,
        expiresAt: undefined,
        renewal: 'manual',
        detail: o.ownTLS.error,
      })
    }
  }

  if (config.provider.client_secret_expires !== undefined) {
    entries.push(clientSecretEntry(config.provider.client_id, config.provider.client_secret_expires, now))
  }
  return { generatedAt: now, entries: soonestFirst(entries) }
}
