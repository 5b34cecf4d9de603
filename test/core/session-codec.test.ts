import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createFrozenClock } from '../../src/core/clock.ts'
import { createSessionCodec, type Session } from '../../src/core/session-codec.ts'
import { cookieHeaderFrom, SECRET, START } from './fixtures.ts'

const OTHER = 'another-secret-that-is-also-long-enough-xyz'

function session(overrides: Partial<Session> = {}): Session {
  const now = Math.floor(START / 1000)
  return {
    sid: 'sid-1',
    identity: {
      sub: 's',
      user: 's',
      email: 'a@example.com',
      groups: ['g1', 'g2'],
      preferredUsername: 'a',
      name: 'A',
    },
    signedInAt: now,
    expiresAt: now + 3600,
    maxExpiresAt: now + 86400,
    accessToken: 'at',
    accessTokenExpiresAt: now + 600,
    refreshToken: 'rt',
    idToken: 'it',
    providerSid: 'op-sid-1',
    ...overrides,
  }
}

test('round trip: what is written is read back, from a fresh codec too (no cache)', async () => {
  const clock = createFrozenClock(START)
  const a = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const header = cookieHeaderFrom(await a.write(session()))
  const b = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const r = await b.read(header)
  assert.ok(r.ok)
  assert.deepEqual(r.session, session())
})

test('large sessions are chunked, read back whole, and stale chunks are cleared later', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: true, clock })
  const big = session({ idToken: 'x'.repeat(9000) })
  const set = await codec.write(big)
  assert.ok(set.length >= 3)
  assert.ok(set[0]!.startsWith(`gh=${set.length}~`))
  assert.ok(set[1]!.startsWith('gh.1='))
  for (const c of set) assert.ok(c.length < 4096, 'each cookie fits a browser limit')
  const jar = new Map<string, string>()
  const header = cookieHeaderFrom(set, jar)
  const fresh = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: true, clock })
  const r = await fresh.read(header)
  assert.ok(r.ok)
  assert.equal(r.session.idToken?.length, 9000)
  const small = await codec.write(session(), header)
  assert.ok(small.some((c) => c.startsWith('gh.1=;') && c.includes('Max-Age=0')))
  assert.ok(small.some((c) => c.startsWith('gh.2=;') && c.includes('Max-Age=0')))
  const after = cookieHeaderFrom(small, jar)
  assert.ok((await fresh.read(after)).ok)
})

test('a missing chunk is malformed, not a crash', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: true, clock })
  const set = await codec.write(session({ idToken: 'x'.repeat(9000) }))
  const header = cookieHeaderFrom(set.filter((c) => !c.startsWith('gh.2=')))
  const fresh = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: true, clock })
  assert.deepEqual(await fresh.read(header), { ok: false, reason: 'malformed' })
})

test('secret rotation: a cookie from the old secret still reads; new cookies use the first secret', async () => {
  const clock = createFrozenClock(START)
  const old = await createSessionCodec({ secrets: [OTHER], cookieName: 'gh', secure: false, clock })
  const header = cookieHeaderFrom(await old.write(session()))
  const rotated = await createSessionCodec({
    secrets: [SECRET, OTHER],
    cookieName: 'gh',
    secure: false,
    clock,
  })
  assert.ok((await rotated.read(header)).ok)
  const newHeader = cookieHeaderFrom(await rotated.write(session()))
  const onlyNew = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  assert.ok((await onlyNew.read(newHeader)).ok)
  const onlyOld = await createSessionCodec({ secrets: [OTHER], cookieName: 'gh', secure: false, clock })
  assert.deepEqual(await onlyOld.read(newHeader), { ok: false, reason: 'undecryptable', repeats: 0 })
})

test('a refused cookie value sent again is answered from memory, and its repeats are counted', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const other = await createSessionCodec({ secrets: [OTHER], cookieName: 'gh', secure: false, clock })
  const foreign = cookieHeaderFrom(await other.write(session()))
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(await codec.read(foreign), { ok: false, reason: 'undecryptable', repeats: i })
  }
  assert.deepEqual(await codec.read('gh=not-a-jwe'), { ok: false, reason: 'malformed', repeats: 0 })
  assert.deepEqual(await codec.read('gh=not-a-jwe'), { ok: false, reason: 'malformed', repeats: 1 })
  // A good cookie is not affected by the refusals around it.
  assert.ok((await codec.read(cookieHeaderFrom(await codec.write(session())))).ok)
})

test('expiry is checked on cache hits too', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const header = cookieHeaderFrom(await codec.write(session()))
  assert.ok((await codec.read(header)).ok)
  clock.advance(3600_000)
  assert.deepEqual(await codec.read(header), { ok: false, reason: 'expired', repeats: 0 })
  assert.deepEqual(await codec.read(header), { ok: false, reason: 'expired', repeats: 1 })
})

test('the cache is bounded', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({
    secrets: [SECRET],
    cookieName: 'gh',
    secure: false,
    clock,
    cacheEntries: 2,
  })
  const headers = []
  for (let i = 0; i < 5; i++) headers.push(cookieHeaderFrom(await codec.write(session({ sid: `s${i}` }))))
  // All still read (decrypting again), whatever was evicted.
  for (const h of headers) assert.ok((await codec.read(h)).ok)
})

test('short or missing secrets are refused at construction', async () => {
  const clock = createFrozenClock(START)
  await assert.rejects(createSessionCodec({ secrets: [], cookieName: 'gh', secure: false, clock }), TypeError)
  await assert.rejects(
    createSessionCodec({ secrets: ['short'], cookieName: 'gh', secure: false, clock }),
    TypeError,
  )
})

test('a cookie whose name merely ends with ours is not read', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const value = cookieHeaderFrom(await codec.write(session()))
    .split('=')
    .slice(1)
    .join('=')
  assert.deepEqual(await codec.read(`xgh=${value}`), { ok: false, reason: 'missing' })
})

test('a cookie value refused as revoked stays refused, cheaply, even while it would still decrypt', async () => {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gh', secure: false, clock })
  const header = cookieHeaderFrom(await codec.write(session()))
  const first = await codec.read(header)
  assert.ok(first.ok)
  codec.refuse(first.token, 'revoked')
  assert.equal(codec.wasRefused(header), true)
  assert.deepEqual(await codec.read(header), { ok: false, reason: 'revoked', repeats: 1 })
  assert.deepEqual(await codec.read(header), { ok: false, reason: 'revoked', repeats: 2 })
})

test('a cookie domain (session.cookie_domain): the cookie and its chunks carry Domain; __Host- cannot', async () => {
  const clock = createFrozenClock(Date.UTC(2026, 0, 1))
  await assert.rejects(
    createSessionCodec({
      secrets: [SECRET],
      cookieName: '__Host-gatehouse',
      secure: true,
      domain: 'example.com',
      clock,
    }),
    /a __Host- cookie cannot have a Domain/,
  )
  const codec = await createSessionCodec({
    secrets: [SECRET],
    cookieName: '__Secure-gatehouse',
    secure: true,
    domain: 'example.com',
    chunkSize: 200,
    clock,
  })
  const now = Math.floor(clock.now() / 1000)
  const set = await codec.write(
    {
      sid: 's1',
      identity: { sub: 'u', user: 'u', groups: [] },
      signedInAt: now,
      expiresAt: now + 3600,
      maxExpiresAt: now + 7200,
    },
    undefined,
  )
  assert.ok(set.length > 1, 'chunked')
  for (const c of set) assert.match(c, /; Domain=example\.com; Secure/)
  const header = set.map((c) => c.split(';')[0]).join('; ')
  for (const c of codec.clear(header)) assert.match(c, /; Domain=example\.com; Secure; Max-Age=0/)
})
