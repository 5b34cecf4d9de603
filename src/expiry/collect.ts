import { createHmac, randomBytes, type X509Certificate } from 'node:crypto'
import { providerList } from '../config/providers.ts'
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
import { type ObservedCertificate, type ProbeOptions, probeTLS, type TLSObserver } from './tls.ts'

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
  /**
   * `config`: named by the config (the issuer, the upstream), probed when not seen lately. `discovery`:
   * named only by the stored discovery document, which whoever can write the provider's answers or the
   * store controls; probed only once Gatehouse has connected there itself (a real handshake), never
   * just because the document says so (else every instance would probe any host:port it names, and
   * show the answer on /status).
   */
  source: 'config' | 'discovery'
}

function targetOf(
  url: string,
  owner: TLSTarget['owner'],
  label: string,
  source: TLSTarget['source'],
): TLSTarget | undefined {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return undefined
  }
  if (u.protocol !== 'https:') return undefined
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) || 443, owner, label, source }
}

/**
 * The https endpoints of the provider (issuer, JWKS, token endpoint) and the upstream, one per host:port;
 * one named by the config is `config` even when the discovery document names it too.
 */
export function tlsTargets(
  config: Config,
  discovery: Record<string, unknown> | undefined | ReadonlyMap<string, Record<string, unknown> | undefined>,
): TLSTarget[] {
  // With a providers list each is labelled by name, with its own discovery document.
  const listed = config.providers !== undefined
  const documents =
    discovery instanceof Map ? discovery : new Map([[providerList(config)[0]!.name, discovery]])
  const candidates = [
    ...providerList(config).map((p) =>
      targetOf(p.config.issuer, 'provider', listed ? `provider ${p.name}` : 'provider', 'config'),
    ),
    ...(config.apps === undefined
      ? [targetOf(config.upstream ?? '', 'upstream', 'upstream', 'config')]
      : config.apps.map((a) => targetOf(a.upstream, 'upstream', `upstream (app ${a.name})`, 'config'))),
    ...providerList(config).flatMap((p) => {
      const doc = documents.get(p.name)
      return ['jwks_uri', 'token_endpoint'].map((k) =>
        typeof doc?.[k] === 'string'
          ? targetOf(doc[k] as string, 'provider', listed ? `provider ${p.name}` : 'provider', 'discovery')
          : undefined,
      )
    }),
  ]
  const seen = new Map<string, TLSTarget>()
  for (const t of candidates)
    if (t !== undefined && !seen.has(`${t.host}:${t.port}`)) seen.set(`${t.host}:${t.port}`, t)
  return [...seen.values()]
}

/** Where the per-deployment salt of secret fingerprints is kept (CacheStore). */
export const FINGERPRINT_SALT_KEY = 'gatehouse:expiry:secret_fingerprint_salt'

/**
 * The salt of this deployment's secret fingerprints: 32 random bytes, made by the first instance that
 * needs it and kept in the store. Read on every inventory (never kept in memory), and re-read after it is
 * written: should two instances create one at the same moment, the last write wins and both use it from
 * then on.
 */
export async function fingerprintSalt(store: CacheStore, now: number): Promise<Buffer> {
  const decode = (v: { value: string } | undefined) => {
    const salt = v === undefined ? undefined : Buffer.from(v.value, 'base64url')
    return salt !== undefined && salt.length >= 16 ? salt : undefined
  }
  const found = decode(await store.getCached(FINGERPRINT_SALT_KEY))
  if (found !== undefined) return found
  await store.putCached(FINGERPRINT_SALT_KEY, randomBytes(32).toString('base64url'), now)
  const made = decode(await store.getCached(FINGERPRINT_SALT_KEY))
  if (made === undefined) throw new Error('the store did not keep the secret fingerprint salt')
  return made
}

/**
 * The key a secret's first-seen time is kept under in the store: an HMAC of the secret under the
 * deployment's random salt. It is never shown (entries name secrets by position), and without the
 * salt it cannot be tested against guesses of a weak secret.
 */
export function secretFingerprint(secret: string, salt: Uint8Array): string {
  return createHmac('sha256', salt).update('gatehouse cookie secret v2\0').update(secret).digest('base64url')
}

export interface CollectOptions {
  config: Config
  now: number
  store: CacheStore & TokenStore & Partial<Pick<AlertStore, 'markSeen'>>
  keys: readonly KeyInfo[]
  /** The resolved session secrets, in config order (named by position; only a salted HMAC reaches the store). */
  sessionSecrets: readonly string[]
  /** API tokens expiring within this are listed. */
  warnSeconds: number
  tls: {
    observer: TLSObserver
    /** Probe endpoints not seen in a handshake for `maxAgeSeconds`; false: offline. */
    probe: boolean
    maxAgeSeconds: number
    probeTimeoutMs?: number
    /** Trust anchors of the provider's connections (`provider.ca` with Node's), for probes of its endpoints. */
    providerCA?: ProbeOptions['ca']
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
  if (o.sessionSecrets.length > 0) {
    const salt = store.markSeen === undefined ? undefined : await fingerprintSalt(store, now)
    for (const [index, secret] of o.sessionSecrets.entries()) {
      const firstSeen =
        salt === undefined
          ? now
          : await store.markSeen!(`cookie_secret:${secretFingerprint(secret, salt)}`, now)
      secrets.push({ index, firstSeen })
    }
  }
  entries.push(...cookieSecretEntries(secrets, now, config.session.secret_max_age))

  entries.push(...apiTokenEntries(await store.listTokens({ now: now - 86_400 }), now, o.warnSeconds))

  // Each provider's persisted copies and keys (with a providers list, named in the detail).
  const discoveries = new Map<string, Record<string, unknown> | undefined>()
  const listed = config.providers !== undefined
  for (const { name, config: provider } of providerList(config)) {
    const where = listed ? `store (provider ${name} copies)` : 'store (provider copies)'
    const keys = providerCacheKeys(provider.issuer)
    const discovery = await store.getCached(keys.discovery)
    const jwks = await store.getCached(keys.jwks)
    const discoveryDoc = parseJSON(discovery?.value)
    discoveries.set(name, discoveryDoc)
    const cache = provider.cache
    if (discovery !== undefined) {
      entries.push(
        providerCacheEntry(
          'discovery',
          discovery.fetchedAt,
          now,
          cache.refresh_after,
          cache.stale_if_error,
          where,
        ),
      )
    }
    if (jwks !== undefined) {
      entries.push(
        providerCacheEntry('jwks', jwks.fetchedAt, now, cache.refresh_after, cache.stale_if_error, where),
      )
      const set = parseJSON(jwks.value)
      if (set !== undefined && Array.isArray(set['keys'])) {
        const uri =
          typeof discoveryDoc?.['jwks_uri'] === 'string'
            ? discoveryDoc['jwks_uri']
            : listed
              ? `provider ${name} JWKS`
              : 'provider JWKS'
        entries.push(...providerKeyEntries({ keys: set['keys'] as unknown[] }, jwks.fetchedAt, uri))
      }
    }
  }

  for (const target of tlsTargets(config, discoveries)) {
    let cert: ObservedCertificate | undefined = o.tls.observer.get(target.host, target.port)
    const mayProbe = target.source === 'config' || o.tls.observer.seenInHandshake(target.host, target.port)
    let why = mayProbe
      ? 'no connection made yet'
      : 'named only by the discovery document: read from the first connection Gatehouse makes there, never probed'
    if (mayProbe && o.tls.probe && (cert === undefined || now - cert.observedAt > o.tls.maxAgeSeconds)) {
      try {
        cert = await probeTLS(target.host, target.port, {
          nowSeconds: now,
          timeoutMs: o.tls.probeTimeoutMs,
          ca: target.owner === 'provider' ? o.tls.providerCA : undefined,
        })
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

  for (const { config: provider } of providerList(config)) {
    if (provider.client_secret_expires !== undefined)
      entries.push(clientSecretEntry(provider.client_id, provider.client_secret_expires, now))
  }
  return { generatedAt: now, entries: soonestFirst(entries) }
}
