import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, before, describe, it } from 'node:test'
import { compactDecrypt, decodeProtectedHeader, type JWK, jwtVerify, SignJWT } from 'jose'

import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createKeyRing, type KeyRing, type KeyRingOptions } from '../../src/keys/key-ring.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import type { KeyRecord, KeyState, KeyStore } from '../../src/store/ports.ts'
import { createSQLiteStore } from '../../src/store/sqlite-store.ts'

const START = Date.UTC(2026, 0, 1)
const HOUR = 3600
const DAY = 86_400
const PERIOD = 30 * DAY
const AHEAD = DAY
const RETENTION = 45 * DAY
const SECRET = 'at-rest secret one, 32 characters or more'
const NEW_SECRET = 'at-rest secret two, also 32 characters or more'

type Clock = ReturnType<typeof createFrozenClock>

function ringOn(store: KeyStore, clock: Clock, overrides: Partial<KeyRingOptions> = {}): Promise<KeyRing> {
  return createKeyRing({
    store,
    clock,
    log: silentLogger,
    encryptionSecrets: [SECRET],
    signingPeriodSeconds: PERIOD,
    publishAheadSeconds: AHEAD,
    retentionSeconds: RETENTION,
    ...overrides,
  })
}

const seconds = (clock: Clock) => Math.floor(clock.now() / 1000)

async function inState(store: KeyStore, state: KeyState): Promise<KeyRecord[]> {
  return (await store.listKeys()).filter((k) => k.state === state)
}

function jwksKids(ring: KeyRing): string[] {
  return ring
    .jwks()
    .keys.map((k) => k['kid'] as string)
    .sort()
}

/** The same derivation as the key ring: pinned here because it is a stored format (changing it locks out every database). */
async function atRestKey(secret: string): Promise<Uint8Array> {
  const enc = new TextEncoder()
  const ikm = await crypto.subtle.importKey('raw', enc.encode(secret), 'HKDF', false, ['deriveBits'])
  const bits = await crypto.subtle.deriveBits(
    {
      name: 'HKDF',
      hash: 'SHA-256',
      salt: enc.encode('gatehouse'),
      info: enc.encode('signing keys at rest v1'),
    },
    ikm,
    256,
  )
  return new Uint8Array(bits)
}

describe('key ring: options', () => {
  it('refuses missing or short encryption secrets and non-positive periods at construction', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    await assert.rejects(ringOn(store, clock, { encryptionSecrets: [] }), TypeError)
    await assert.rejects(ringOn(store, clock, { encryptionSecrets: ['short'] }), TypeError)
    await assert.rejects(ringOn(store, clock, { encryptionSecrets: [SECRET, 'short'] }), TypeError)
    await assert.rejects(ringOn(store, clock, { signingPeriodSeconds: 0 }), /signingPeriodSeconds/)
    await assert.rejects(ringOn(store, clock, { publishAheadSeconds: 1.5 }), /publishAheadSeconds/)
    await assert.rejects(ringOn(store, clock, { retentionSeconds: -1 }), /retentionSeconds/)
    assert.deepEqual(await store.listKeys(), [], 'nothing written when the options are refused')
  })
})

describe('key ring: schedule', () => {
  it('on an empty store: a current key signing from now and a next key published ahead of its turn', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    const t = seconds(clock)
    const [current] = await inState(store, 'current')
    const [next] = await inState(store, 'next')
    assert.ok(current && next)
    assert.equal((await store.listKeys()).length, 2)
    assert.deepEqual(
      [current.activatesAt, current.retiresAt, current.removeAt],
      [t, t + PERIOD, t + PERIOD + RETENTION],
    )
    assert.deepEqual(
      [next.activatesAt, next.retiresAt, next.removeAt],
      [t + PERIOD, t + 2 * PERIOD, t + 2 * PERIOD + RETENTION],
    )
    assert.equal(ring.signingKey().kid, current.kid)
    assert.equal(ring.signingKey().alg, 'EdDSA')
    assert.deepEqual(
      ring.jwks().keys.map((k) => k['kid']),
      [current.kid, next.kid],
      'current first, then next',
    )
    assert.deepEqual(
      ring.list().map((k) => [k.kid, k.state]),
      [
        [current.kid, 'current'],
        [next.kid, 'next'],
      ],
    )
    assert.deepEqual(await ring.tick(), [], 'nothing is due right after start')
  })

  it('across several periods: next → current at its time, current → retired, a new next, removal only at removeAt', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    const STEP = 6 * HOUR // PERIOD, AHEAD and RETENTION are multiples, so a tick lands on every boundary
    const seen = new Map<string, KeyRecord>()
    const becameCurrentAt = new Map<string, number>()
    const retiredAt = new Map<string, number>()
    const removedAt = new Map<string, number>()
    const end = seconds(clock) + 6 * PERIOD

    while (seconds(clock) <= end) {
      const t = seconds(clock)
      const due = (await store.listKeys()).some(
        (k) => (k.state === 'current' && k.retiresAt <= t) || (k.state === 'retired' && k.removeAt <= t),
      )
      const changes = await ring.tick()
      assert.equal(changes.length > 0, due, `tick at ${t} changes something exactly when something is due`)
      const stored = await store.listKeys()
      for (const k of stored) if (!seen.has(k.kid)) seen.set(k.kid, k)
      for (const k of stored) {
        if (k.state === 'current' && !becameCurrentAt.has(k.kid)) becameCurrentAt.set(k.kid, t)
        if (k.state === 'retired' && !retiredAt.has(k.kid)) retiredAt.set(k.kid, t)
      }
      for (const kid of seen.keys()) {
        if (!removedAt.has(kid) && !stored.some((k) => k.kid === kid)) removedAt.set(kid, t)
      }

      const current = stored.filter((k) => k.state === 'current')
      const next = stored.filter((k) => k.state === 'next')
      assert.equal(current.length, 1, `one current key at ${t}`)
      assert.equal(next.length, 1, `one next key at ${t}`)
      assert.ok(
        current[0]!.activatesAt <= t && t < current[0]!.retiresAt,
        'the current key is within its period',
      )
      assert.equal(
        next[0]!.activatesAt,
        current[0]!.retiresAt,
        'the next key takes over when current retires',
      )
      assert.equal(ring.signingKey().kid, current[0]!.kid)
      for (const k of stored.filter((k) => k.state === 'retired')) assert.ok(k.removeAt > t)
      // Published: exactly what is stored (next, current, retired), never a removed key, never private material.
      assert.deepEqual(jwksKids(ring), stored.map((k) => k.kid).sort())
      for (const kid of removedAt.keys()) {
        assert.equal(ring.verificationKey(kid), undefined, `removed key ${kid} does not verify`)
      }
      for (const k of ring.jwks().keys) assert.equal('d' in k, false)
      clock.advance(STEP * 1000)
    }

    // Every key that signed started exactly at its scheduled time and retired exactly at its end...
    assert.ok(becameCurrentAt.size >= 6, `${becameCurrentAt.size} keys signed`)
    for (const [kid, t] of becameCurrentAt) assert.equal(t, seen.get(kid)!.activatesAt, `${kid} activation`)
    for (const [kid, t] of retiredAt) assert.equal(t, seen.get(kid)!.retiresAt, `${kid} retirement`)
    // ...and was removed exactly at removeAt, never before.
    assert.ok(removedAt.size >= 4, `${removedAt.size} keys removed`)
    for (const [kid, t] of removedAt) assert.equal(t, seen.get(kid)!.removeAt, `${kid} removal`)
  })

  it('tick reports each change: the promotion, the retirement, the new next key, a removal', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    const [c] = await inState(store, 'current')
    const [n] = await inState(store, 'next')
    clock.set((c!.retiresAt - 1) * 1000)
    assert.deepEqual(await ring.tick(), [], 'one second before its time, nothing moves')
    assert.equal(ring.signingKey().kid, c!.kid)
    clock.set(c!.retiresAt * 1000)
    const changes = await ring.tick()
    const [n2] = await inState(store, 'next')
    assert.deepEqual(changes, [
      `${n!.kid} next → current (scheduled)`,
      `${c!.kid} current → retired`,
      `${n2!.kid} created as next`,
    ])
    assert.equal(ring.signingKey().kid, n!.kid)
    assert.ok(ring.verificationKey(c!.kid), 'the retired key still verifies')

    clock.set((c!.removeAt - 1) * 1000)
    await ring.tick()
    assert.ok(jwksKids(ring).includes(c!.kid), 'published until removeAt')
    clock.set(c!.removeAt * 1000)
    assert.ok((await ring.tick()).includes(`${c!.kid} removed`))
    assert.equal(jwksKids(ring).includes(c!.kid), false)
    assert.equal(ring.verificationKey(c!.kid), undefined)
  })

  it('rotate(): next signs at once, current retires, a new next follows; the retired key stays published', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    clock.advance(10 * DAY * 1000)
    const [c] = await inState(store, 'current')
    const [n] = await inState(store, 'next')

    const changes = await ring.rotate()
    const [n2] = await inState(store, 'next')
    assert.deepEqual(changes, [
      `${n!.kid} next → current (on demand)`,
      `${c!.kid} current → retired`,
      `${n2!.kid} created as next`,
    ])
    assert.equal(ring.signingKey().kid, n!.kid)
    assert.equal((await inState(store, 'current')).length, 1)
    assert.equal(
      n2!.activatesAt,
      n!.retiresAt,
      'the new next takes over when the promoted key ends its period',
    )
    assert.deepEqual(jwksKids(ring), [c!.kid, n!.kid, n2!.kid].sort())
    // The early retirement keeps the scheduled removal: later than needed, never earlier.
    const retired = (await store.listKeys()).find((k) => k.kid === c!.kid)!
    assert.equal(retired.state, 'retired')
    assert.equal(retired.removeAt, c!.removeAt)

    // A second rotation right away: still one current, both older keys published.
    await ring.rotate()
    assert.equal(ring.signingKey().kid, n2!.kid)
    const stored = await store.listKeys()
    assert.deepEqual(stored.map((k) => k.state).sort(), ['current', 'next', 'retired', 'retired'])
    assert.deepEqual(jwksKids(ring), stored.map((k) => k.kid).sort())

    // The promoted key signs until its own scheduled retirement, not one period after the rotation.
    clock.set((n2!.retiresAt - 1) * 1000)
    await ring.tick()
    assert.equal(ring.signingKey().kid, n2!.kid)
    clock.set(n2!.retiresAt * 1000)
    await ring.tick()
    assert.notEqual(ring.signingKey().kid, n2!.kid)
  })

  it('signingKey() follows the schedule between ticks: past its retirement the current key no longer signs', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    const [c] = await inState(store, 'current')
    const [n] = await inState(store, 'next')
    clock.set((c!.retiresAt - 1) * 1000)
    assert.equal(ring.signingKey().kid, c!.kid)
    // The tick is late (an instance ticks every minute; another instance rotated): the next key signs on time.
    clock.set((c!.retiresAt + 50) * 1000)
    assert.equal(ring.signingKey().kid, n!.kid)
    assert.equal((await store.listKeys()).find((k) => k.kid === n!.kid)?.state, 'next', 'no tick yet')
    await ring.tick()
    assert.equal(ring.signingKey().kid, n!.kid)
  })

  it('after a downtime longer than a signing period, the key that signs is within its period', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    await ringOn(store, clock)
    const [c] = await inState(store, 'current')
    const [n] = await inState(store, 'next')
    clock.set((n!.retiresAt + 15 * DAY) * 1000) // both the current and the next key are overdue
    const ring = await ringOn(store, clock) // the restart
    const t = seconds(clock)
    const signer = ring.list().find((k) => k.kid === ring.signingKey().kid)!
    assert.equal(signer.state, 'current')
    assert.ok(signer.activatesAt <= t && t < signer.retiresAt, 'signs within its own period')
    // Its removal counts from a retirement still ahead, so everything it signs now outlives nothing.
    assert.ok(signer.removeAt >= t + PERIOD + RETENTION - 1)
    const stored = await store.listKeys()
    assert.equal(stored.filter((k) => k.state === 'current').length, 1)
    const [next] = stored.filter((k) => k.state === 'next')
    assert.equal(next?.activatesAt, signer.retiresAt)
    assert.equal(
      stored.some((k) => k.kid === c!.kid),
      false,
      'the old current key was past its removeAt',
    )
    assert.equal(stored.find((k) => k.kid === n!.kid)?.state, 'retired', 'the overdue next key never signs')
  })

  it('a key signed with signingKey() verifies with verificationKey(kid) while published, in every state', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const ring = await ringOn(store, clock)
    const signer = ring.signingKey()
    const jwt = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: signer.alg, kid: signer.kid })
      .sign(signer.key)
    const check = async () => {
      const k = ring.verificationKey(signer.kid)
      assert.ok(k)
      await jwtVerify(jwt, k.key, { algorithms: [k.alg] })
    }
    await check()
    await ring.rotate()
    assert.equal(ring.list().find((k) => k.kid === signer.kid)?.state, 'retired')
    await check()
  })
})

describe('key ring: key material', () => {
  for (const algorithm of ['EdDSA', 'ES256'] as const) {
    it(`${algorithm}: the JWKS holds public keys only; the store holds private keys only as a compact JWE`, async () => {
      const store = createMemoryStore()
      const clock = createFrozenClock(START)
      const ring = await ringOn(store, clock, { algorithm })
      await ring.rotate() // next, current and retired all published
      const jwks = ring.jwks()
      assert.equal(jwks.keys.length, 3)
      for (const k of jwks.keys) {
        assert.equal('d' in k, false, 'no private key member')
        assert.equal(k['use'], 'sig')
        assert.equal(k['alg'], algorithm)
        assert.equal(typeof k['kid'], 'string')
        assert.equal(k['kty'], algorithm === 'EdDSA' ? 'OKP' : 'EC')
      }
      // jwks() hands out copies: a caller cannot change what is published.
      ;(jwks.keys[0] as Record<string, unknown>)['d'] = 'tampered'
      assert.equal('d' in ring.jwks().keys[0]!, false)

      const wrapKey = await atRestKey(SECRET)
      for (const record of await store.listKeys()) {
        assert.match(
          record.privateJwe,
          /^[\w-]+\.\.[\w-]+\.[\w-]+\.[\w-]+$/,
          'compact JWE, dir: empty encrypted key',
        )
        const header = decodeProtectedHeader(record.privateJwe)
        assert.equal(header.alg, 'dir')
        assert.equal(header.enc, 'A256GCM')
        const { plaintext } = await compactDecrypt(record.privateJwe, wrapKey)
        const jwk = JSON.parse(new TextDecoder().decode(plaintext)) as JWK
        assert.equal(typeof jwk.d, 'string')
        assert.equal(jwk.kid, record.kid)
        assert.equal(
          jwk.x,
          record.publicJwk['x'],
          'the sealed private key belongs to the published public key',
        )
        assert.equal(record.privateJwe.includes(jwk.d!), false, 'the d value is not in the stored JWE')
        assert.equal(JSON.stringify(record.publicJwk).includes(jwk.d!), false)
        assert.equal(JSON.stringify(ring.jwks()).includes(jwk.d!), false)
      }
    })
  }

  it('a ring with another at-rest secret cannot open the keys (ERR_KEY_AT_REST) and writes nothing', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    await ringOn(store, clock)
    const before = await store.listKeys()
    await assert.rejects(ringOn(store, clock, { encryptionSecrets: [NEW_SECRET] }), {
      name: 'KeyRingError',
      code: 'ERR_KEY_AT_REST',
    })
    assert.deepEqual(await store.listKeys(), before)
  })

  it('rotating the at-rest secret: new secret first and old second opens old keys, seals new ones with the new secret', async () => {
    const store = createMemoryStore()
    const clock = createFrozenClock(START)
    const old = await ringOn(store, clock)
    const oldKid = old.signingKey().kid
    const oldHeaderKid = decodeProtectedHeader((await store.listKeys())[0]!.privateJwe).kid

    const both = await ringOn(store, clock, { encryptionSecrets: [NEW_SECRET, SECRET] })
    assert.equal(both.signingKey().kid, oldKid, 'opens the key sealed with the old secret')
    await both.rotate()
    await both.rotate()
    // Every key that still needs its private half was made after the change, sealed with the new secret.
    for (const k of await store.listKeys()) {
      const sealedWith = decodeProtectedHeader(k.privateJwe).kid
      if (k.state === 'retired') continue
      assert.notEqual(sealedWith, oldHeaderKid)
    }
    assert.ok(both.verificationKey(oldKid), 'the old key is still published')
    const onlyNew = await ringOn(store, clock, { encryptionSecrets: [NEW_SECRET] })
    assert.equal(onlyNew.signingKey().kid, both.signingKey().kid)
    assert.ok(onlyNew.verificationKey(oldKid), 'a retired key needs only its public half')
  })
})

describe('key ring: two instances on one SQLite database', () => {
  let dir: string
  let n = 0
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-keys-'))
  })
  after(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  function twoStores() {
    const file = join(dir, `keys-${++n}.db`)
    const dbs = [new DatabaseSync(file), new DatabaseSync(file)]
    for (const db of dbs) db.exec('PRAGMA busy_timeout = 5000')
    return {
      a: createSQLiteStore(dbs[0]!),
      b: createSQLiteStore(dbs[1]!),
      close: () => {
        for (const db of dbs) db.close()
      },
    }
  }

  it('tick at the same moment promotes once, several periods in a row', async () => {
    const { a: storeA, b: storeB, close } = twoStores()
    try {
      const clock = createFrozenClock(START)
      const a = await ringOn(storeA, clock)
      const b = await ringOn(storeB, clock)
      assert.equal(b.signingKey().kid, a.signingKey().kid)
      for (let i = 0; i < 4; i++) {
        const [c] = await inState(storeA, 'current')
        const [nx] = await inState(storeA, 'next')
        clock.set(c!.retiresAt * 1000)
        const [ca, cb] = await Promise.all([a.tick(), b.tick()])
        const promotions = [...ca, ...cb].filter((s) => s.includes('next → current'))
        assert.deepEqual(promotions, [`${nx!.kid} next → current (scheduled)`], 'one instance promotes')
        const current = await inState(storeA, 'current')
        assert.deepEqual(
          current.map((k) => k.kid),
          [nx!.kid],
          'never two current keys',
        )
        assert.equal((await inState(storeA, 'next')).length, 1, 'one next key')
        await Promise.all([a.reload(), b.reload()])
        assert.equal(a.signingKey().kid, nx!.kid)
        assert.equal(b.signingKey().kid, nx!.kid)
        assert.deepEqual(jwksKids(a), jwksKids(b))
      }
    } finally {
      close()
    }
  })

  it('rotate at the same moment rotates once', async () => {
    const { a: storeA, b: storeB, close } = twoStores()
    try {
      const clock = createFrozenClock(START)
      const a = await ringOn(storeA, clock)
      const b = await ringOn(storeB, clock)
      for (let i = 0; i < 3; i++) {
        clock.advance(DAY * 1000)
        const [c] = await inState(storeA, 'current')
        const [nx] = await inState(storeA, 'next')
        const [ra, rb] = await Promise.all([a.rotate(), b.rotate()])
        assert.equal([...ra, ...rb].filter((s) => s.includes('next → current')).length, 1)
        assert.deepEqual(
          (await inState(storeA, 'current')).map((k) => k.kid),
          [nx!.kid],
        )
        assert.ok((await inState(storeA, 'retired')).some((k) => k.kid === c!.kid))
        assert.equal((await inState(storeA, 'next')).length, 1, 'one next key')
      }
    } finally {
      close()
    }
  })

  it('a tick and a rotate at the same moment, on the scheduled time: one promotion', async () => {
    const { a: storeA, b: storeB, close } = twoStores()
    try {
      const clock = createFrozenClock(START)
      const a = await ringOn(storeA, clock)
      const b = await ringOn(storeB, clock)
      const [c] = await inState(storeA, 'current')
      clock.set(c!.retiresAt * 1000)
      await Promise.all([a.tick(), b.rotate()])
      assert.equal((await inState(storeA, 'current')).length, 1)
    } finally {
      close()
    }
  })

  it('two instances starting at the same moment on an empty database: one current key', async () => {
    const { a: storeA, b: storeB, close } = twoStores()
    try {
      const clock = createFrozenClock(START)
      const [a, b] = await Promise.all([ringOn(storeA, clock), ringOn(storeB, clock)])
      assert.equal((await inState(storeA, 'current')).length, 1, 'never two current keys')
      await Promise.all([a.reload(), b.reload()])
      assert.equal(a.signingKey().kid, b.signingKey().kid)
    } finally {
      close()
    }
  })
})
