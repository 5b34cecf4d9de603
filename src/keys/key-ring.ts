import { CompactEncrypt, compactDecrypt, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import type { Clock } from '../core/clock.ts'
import { base64url, utf8 } from '../core/encoding.ts'
import { GatehouseError } from '../core/errors.ts'
import type { Logger } from '../core/ports.ts'
import type { KeyRecord, KeyState, KeyStore } from '../store/ports.ts'

export type SigningAlgorithm = 'EdDSA' | 'ES256'

export interface KeyRingOptions {
  store: KeyStore
  clock: Clock
  log: Logger
  /** Algorithm of new keys. Default EdDSA (Ed25519). */
  algorithm?: SigningAlgorithm
  /** Secret (≥ 32 characters) that encrypts private keys at rest; several for rotation, the first encrypts. */
  encryptionSecrets: readonly string[]
  /** How long a key signs (lifetimes.signing_key.ttl). */
  signingPeriodSeconds: number
  /** How long a key is published as `next` before it signs, so verifiers' caches hold it in time. */
  publishAheadSeconds: number
  /** How long a retired key stays published: the longest lifetime of anything it signed (derived, never configured). */
  retentionSeconds: number
}

/** What `gatehouse keys list` shows. */
export interface KeyInfo {
  kid: string
  alg: SigningAlgorithm
  state: KeyState
  createdAt: number
  activatesAt: number
  retiresAt: number
  removeAt: number
}

export interface KeyRing {
  /** The key that signs now. */
  signingKey(): { kid: string; alg: SigningAlgorithm; key: CryptoKey }
  /** A published key by kid (next, current or retired), from memory only. */
  verificationKey(kid: string): { alg: SigningAlgorithm; key: CryptoKey } | undefined
  /** The public keys to publish at /.well-known/jwks.json. */
  jwks(): { keys: Record<string, unknown>[] }
  list(): KeyInfo[]
  /**
   * Do what the schedule says is due: promote `next` when `current` reaches its retirement, remove
   * retired keys past their removal time, make sure a `next` exists. Returns what changed.
   */
  tick(): Promise<string[]>
  /** Rotate now: `next` signs, `current` retires, a new `next` is made. */
  rotate(): Promise<string[]>
  /** Reload from the store (another instance may have rotated). */
  reload(): Promise<void>
}

export class KeyRingError extends GatehouseError {
  override readonly name = 'KeyRingError'
}

async function deriveAtRestKey(secret: string): Promise<{ kid: string; key: Uint8Array }> {
  const ikm = await crypto.subtle.importKey('raw', utf8(secret), 'HKDF', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: utf8('gatehouse'), info: utf8('signing keys at rest v1') },
    ikm,
    256,
  )
  const key = new Uint8Array(bits)
  const id = new Uint8Array(await crypto.subtle.digest('SHA-256', key))
  return { kid: base64url(id.subarray(0, 6)), key }
}

type Loaded = { record: KeyRecord; publicKey: CryptoKey; privateKey?: CryptoKey }

/**
 * Gatehouse's own signing keys: `next` (published, not yet signing) → `current` (signing) →
 * `retired` (published, verifying only) → removed. Private keys are encrypted at rest; every key in
 * use is held in memory, so signing and verifying never touch the store.
 *
 * @example
 * const ring = await createKeyRing({ store, clock, log, encryptionSecrets: [secret], signingPeriodSeconds: 30 * 86400, publishAheadSeconds: 86400, retentionSeconds: 90 * 86400 })
 * const { kid, key } = ring.signingKey()
 */
export async function createKeyRing(options: KeyRingOptions): Promise<KeyRing> {
  const { store, clock, log } = options
  const algorithm = options.algorithm ?? 'EdDSA'
  if (options.encryptionSecrets.length === 0 || options.encryptionSecrets.some((s) => s.length < 32)) {
    throw new TypeError('key ring: at least one encryption secret of 32 characters or more is required')
  }
  for (const [name, v] of [
    ['signingPeriodSeconds', options.signingPeriodSeconds],
    ['publishAheadSeconds', options.publishAheadSeconds],
    ['retentionSeconds', options.retentionSeconds],
  ] as const) {
    if (!(Number.isInteger(v) && v > 0)) throw new TypeError(`key ring: ${name} must be a positive integer`)
  }
  const atRest = await Promise.all(options.encryptionSecrets.map(deriveAtRestKey))
  const atRestByKid = new Map(atRest.map((k) => [k.kid, k.key]))
  let keys = new Map<string, Loaded>()
  const now = () => Math.floor(clock.now() / 1000)

  async function seal(jwk: JWK): Promise<string> {
    const first = atRest[0]!
    return new CompactEncrypt(utf8(JSON.stringify(jwk)))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: first.kid })
      .encrypt(first.key)
  }

  async function unseal(jwe: string): Promise<JWK> {
    const { plaintext } = await compactDecrypt(
      jwe,
      (header) => {
        const key = header.kid === undefined ? undefined : atRestByKid.get(header.kid)
        if (key === undefined) {
          throw new KeyRingError(
            'ERR_KEY_AT_REST',
            'no configured secret opens the stored signing keys: keys.encryption_secrets (by default session.secrets) changed; list the old secret after the new one to rotate',
          )
        }
        return key
      },
      { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] },
    )
    return JSON.parse(new TextDecoder().decode(plaintext)) as JWK
  }

  async function load(record: KeyRecord): Promise<Loaded> {
    const publicKey = (await importJWK(record.publicJwk as JWK, record.alg)) as CryptoKey
    // Only keys that sign, or will, need their private half in memory.
    const privateKey =
      record.state === 'retired'
        ? undefined
        : ((await importJWK(await unseal(record.privateJwe), record.alg)) as CryptoKey)
    return { record, publicKey, privateKey }
  }

  async function reload(): Promise<void> {
    const records = await store.listKeys()
    const next = new Map<string, Loaded>()
    for (const r of records) {
      const prior = keys.get(r.kid)
      next.set(r.kid, prior !== undefined && prior.record.state === r.state ? prior : await load(r))
    }
    keys = next
  }

  async function create(state: KeyState, activatesAt: number): Promise<KeyRecord> {
    const { publicKey, privateKey } = await generateKeyPair(
      algorithm,
      algorithm === 'EdDSA' ? { extractable: true, crv: 'Ed25519' } : { extractable: true },
    )
    const pub = await exportJWK(publicKey)
    const kid = base64url(crypto.getRandomValues(new Uint8Array(12)))
    const retiresAt = activatesAt + options.signingPeriodSeconds
    const record: KeyRecord = {
      kid,
      alg: algorithm,
      state,
      publicJwk: { ...pub, kid, alg: algorithm, use: 'sig' },
      privateJwe: await seal({ ...(await exportJWK(privateKey)), kid, alg: algorithm }),
      createdAt: now(),
      activatesAt,
      retiresAt,
      removeAt: retiresAt + options.retentionSeconds,
    }
    await store.insertKey(record)
    log.info(
      { event: 'key_created', kid, alg: algorithm, state, activatesAt, retiresAt },
      'signing key created',
    )
    return record
  }

  function byState(state: KeyState): Loaded[] {
    return [...keys.values()]
      .filter((k) => k.record.state === state)
      .sort((a, b) => a.record.activatesAt - b.record.activatesAt)
  }

  /** Promote `next` to `current` and retire the old `current` (compare-and-set: another instance may win). */
  async function promote(reason: string): Promise<string[]> {
    const changes: string[] = []
    const next = byState('next')[0]
    const current = byState('current')
    if (next === undefined) return changes
    if (await store.transitionKey(next.record.kid, 'next', 'current')) {
      changes.push(`${next.record.kid} next → current (${reason})`)
      for (const c of current) {
        if (await store.transitionKey(c.record.kid, 'current', 'retired')) {
          changes.push(`${c.record.kid} current → retired`)
        }
      }
      log.info({ event: 'key_rotated', kid: next.record.kid, reason }, 'signing key rotated')
    }
    return changes
  }

  async function tick(): Promise<string[]> {
    await reload()
    const t = now()
    const changes: string[] = []
    if (byState('current').length === 0) {
      const next = byState('next')[0]
      if (next !== undefined) changes.push(...(await promote('no current key')))
      else {
        const r = await create('current', t)
        changes.push(`${r.kid} created as current`)
      }
      await reload()
    }
    // After a downtime longer than a signing period the promoted key is overdue too: go on (with a key made
    // now when none is next) until the signing key is within its period, since its removeAt counts from retiresAt.
    for (let i = 0; i < 3; i++) {
      const current = byState('current').at(-1)
      if (current === undefined || current.record.retiresAt > t) break
      if (byState('next').length === 0) {
        const r = await create('next', t)
        changes.push(`${r.kid} created as next`)
        await reload()
      }
      changes.push(...(await promote('scheduled')))
      await reload()
    }
    for (const k of byState('retired')) {
      if (k.record.removeAt <= t && (await store.deleteKey(k.record.kid))) {
        changes.push(`${k.record.kid} removed`)
        log.info({ event: 'key_removed', kid: k.record.kid }, 'retired signing key removed')
      }
    }
    if (byState('next').length === 0) {
      const cur = byState('current').at(-1)
      // The next key signs when the current one retires; it is published from now, at least publishAhead before.
      const r = await create('next', Math.max(cur?.record.retiresAt ?? t, t + options.publishAheadSeconds))
      changes.push(`${r.kid} created as next`)
    }
    if (changes.length > 0) await reload()
    // Two instances ticking at the same moment can each create a key. Keep the one every instance picks (the
    // order is the same everywhere) and retire the others: retired, not deleted, as one may have signed.
    const extra = [...byState('current').slice(0, -1), ...byState('next').slice(1)]
    for (const k of extra) {
      if (await store.transitionKey(k.record.kid, k.record.state, 'retired')) {
        changes.push(`${k.record.kid} ${k.record.state} → retired (duplicate)`)
      }
    }
    if (extra.length > 0) await reload()
    return changes
  }

  await tick()

  return {
    signingKey() {
      const t = now()
      const current = byState('current').at(-1)
      // By the schedule, not by the last tick: past its retiresAt the current key stops signing (its removeAt
      // counts from there) and the next key, published ahead, takes over.
      const due =
        current !== undefined && current.record.retiresAt <= t
          ? byState('next').find((k) => k.record.activatesAt <= t)
          : undefined
      const signer = due ?? current
      if (signer?.privateKey === undefined)
        throw new KeyRingError('ERR_NO_SIGNING_KEY', 'no current signing key')
      return { kid: signer.record.kid, alg: signer.record.alg, key: signer.privateKey }
    },
    verificationKey(kid) {
      const k = keys.get(kid)
      return k === undefined ? undefined : { alg: k.record.alg, key: k.publicKey }
    },
    jwks() {
      const order: Record<KeyState, number> = { current: 0, next: 1, retired: 2 }
      return {
        keys: [...keys.values()]
          .sort((a, b) => order[a.record.state] - order[b.record.state])
          .map((k) => ({ ...k.record.publicJwk })),
      }
    },
    list() {
      return [...keys.values()]
        .map(({ record: r }) => ({
          kid: r.kid,
          alg: r.alg,
          state: r.state,
          createdAt: r.createdAt,
          activatesAt: r.activatesAt,
          retiresAt: r.retiresAt,
          removeAt: r.removeAt,
        }))
        .sort((a, b) => a.activatesAt - b.activatesAt)
    },
    tick,
    async rotate() {
      await reload()
      if (byState('next').length === 0) await tick()
      const changes = await promote('on demand')
      await reload()
      const more = await tick()
      return [...changes, ...more]
    },
    reload,
  }
}
