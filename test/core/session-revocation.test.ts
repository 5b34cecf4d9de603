/**
 * Sign-out is server-side (Gatehouse 8): a copy of a signed-out session cookie is refused, on this
 * instance at once and on another once it reloads the list from the store, and a refused cookie costs
 * a lookup when it comes back.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Decision } from '../../src/core/decisions.ts'
import { ProviderRejectedError } from '../../src/core/errors.ts'
import type { SessionRevocationStore } from '../../src/core/ports.ts'
import { createSessionRevocationList, FULL_RELOAD_MS } from '../../src/core/session-revocations.ts'
import { StoreUnavailableError } from '../../src/store/errors.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { API, facts, NAV, setup, signIn } from './fixtures.ts'

const MAX_TTL = 7 * 86_400

function respond(d: Decision) {
  assert.equal(d.kind, 'respond', `expected an answer, got ${JSON.stringify(d)}`)
  if (d.kind !== 'respond') throw new Error('unreachable')
  return d
}

/** A gateway instance whose revocation list is backed by `store` (shared between instances in a test). */
async function instance(store: SessionRevocationStore = createMemoryStore()) {
  const revocations = { list: undefined as ReturnType<typeof createSessionRevocationList> | undefined }
  const g = await setup({}, 'https://app.example.com', {
    sessionRevocations: {
      isRevoked: (s) => revocations.list!.isRevoked(s),
      revoke: (e) => revocations.list!.revoke(e),
    },
  })
  revocations.list = createSessionRevocationList({
    store,
    clock: g.clock,
    log: silent,
    maxTtlSeconds: MAX_TTL,
  })
  return { ...g, store, list: revocations.list }
}

const silent = { debug() {}, info() {}, warn() {}, error() {} }
const cleared = (setCookies: string[]) =>
  setCookies.some((c) => c.startsWith('__Host-gatehouse=;') && c.includes('Max-Age=0'))

describe('sign-out is server-side', () => {
  test('a copy of the cookie kept from before sign-out is refused: 401 session_revoked, cleared, sign-in for a navigation', async () => {
    const g = await instance()
    const { cookie } = await signIn(g)
    assert.equal((await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).kind, 'allow')
    respond(await g.gatehouse.handle(facts('/oauth2/sign_out', { headers: { ...NAV, cookie } })))

    const api = respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'session_revoked')
    assert.match(api.headers['www-authenticate']!, /error="invalid_token"/)
    assert.ok(cleared(api.setCookies))
    const nav = respond(await g.gatehouse.handle(facts('/page', { headers: { ...NAV, cookie } })))
    assert.equal(nav.status, 302)
    assert.ok(nav.headers['location']!.startsWith('https://idp.example/authorize'))
    assert.ok(cleared(nav.setCookies))
    // A repeat is cheap: the exact value is in the refusal cache, which load shedding reads too.
    assert.equal(g.gatehouse.classify(facts('/api', { headers: { ...API, cookie } })), 'rejected')
    const userinfo = respond(
      await g.gatehouse.handle(facts('/oauth2/userinfo', { headers: { ...API, cookie } })),
    )
    assert.equal(userinfo.code, 'session_revoked')
    const auth = respond(
      await g.gatehouse.handle(
        facts('/oauth2/auth', { headers: { ...API, cookie, 'x-forwarded-uri': '/' } }),
      ),
    )
    assert.equal(auth.status, 401)
    const refresh = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(refresh.code, 'session_revoked')
    assert.equal(g.provider.calls.refresh, 0)
  })

  test('the revocation is stored until the session could no longer live, and another instance refuses the cookie after its reload', async () => {
    const store = createMemoryStore()
    const a = await instance(store)
    const b = await instance(store)
    const { cookie } = await signIn(a)
    assert.equal((await b.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).kind, 'allow')
    respond(
      await a.gatehouse.handle(facts('/oauth2/sign_out', { method: 'POST', headers: { ...API, cookie } })),
    )
    const [entry] = await store.listSessionRevocations(0)
    assert.equal(entry?.kind, 'sid')
    assert.equal(entry?.expiresAt, Math.floor(a.clock.now() / 1000) + MAX_TTL)

    // b has the session in its cache: still served until it hears of the revocation.
    assert.equal((await b.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).kind, 'allow')
    await b.list.reload()
    const refused = respond(await b.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
    assert.equal(refused.code, 'session_revoked')
    // A pushed hint is confirmed in the store and taken the same way.
    const c = await instance(store)
    await c.list.markRevoked([{ kind: 'sid', value: entry!.value }])
    assert.equal(
      respond(await c.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
  })

  test('a pushed hint the store does not confirm changes nothing', async () => {
    const g = await instance()
    const { cookie } = await signIn(g)
    const sid = (await g.codec.read(cookie)) as { ok: true; session: { sid: string } }
    await g.list.markRevoked([
      { kind: 'sid', value: sid.session.sid },
      { kind: 'sub', value: 'user-1' },
    ])
    assert.equal((await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).kind, 'allow')
  })

  test('sign out everywhere: every session of the user signed in before the revocation, and none after', async () => {
    const g = await instance()
    const { cookie: first } = await signIn(g)
    const { cookie: second } = await signIn(g)
    g.clock.advance(60_000)
    await g.list.revoke([{ kind: 'sub', value: 'user-1' }])
    for (const cookie of [first, second]) {
      assert.equal(
        respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
        'session_revoked',
      )
    }
    g.clock.advance(1000)
    const { cookie: later } = await signIn(g)
    assert.equal(
      (await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: later } }))).kind,
      'allow',
    )
    g.provider.state.claims = { ...g.provider.state.claims, sub: 'user-2' }
    g.clock.advance(1000)
    const { cookie: other } = await signIn(g)
    assert.equal(
      (await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: other } }))).kind,
      'allow',
    )
  })

  test("by the provider's session id (from the ID token's sid): that provider session only", async () => {
    const g = await instance()
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-session-1' }
    const { cookie: one } = await signIn(g)
    g.provider.state.claims = { ...g.provider.state.claims, sid: 'op-session-2' }
    const { cookie: two } = await signIn(g)
    g.clock.advance(1000)
    await g.list.revoke([{ kind: 'psid', value: 'op-session-1' }])
    assert.equal(
      respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: one } }))).code,
      'session_revoked',
    )
    assert.equal(
      (await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie: two } }))).kind,
      'allow',
    )
  })

  test('store down at sign-out: refused on this instance at once, stored and shared at the first reload that reaches it', async () => {
    const memory = createMemoryStore()
    let down = true
    const flaky: SessionRevocationStore = {
      revokeSessions: (e) =>
        down ? Promise.reject(new StoreUnavailableError('PostgreSQL', 'down')) : memory.revokeSessions(e),
      listSessionRevocations: (n) =>
        down
          ? Promise.reject(new StoreUnavailableError('PostgreSQL', 'down'))
          : memory.listSessionRevocations(n),
      listSessionRevocationsSince: (n, since) =>
        down
          ? Promise.reject(new StoreUnavailableError('PostgreSQL', 'down'))
          : memory.listSessionRevocationsSince(n, since),
      getSessionRevocation: (k, v) => memory.getSessionRevocation(k, v),
      pruneSessionRevocations: (n) => memory.pruneSessionRevocations(n),
    }
    const g = await instance(flaky)
    const { cookie } = await signIn(g)
    const out = respond(await g.gatehouse.handle(facts('/oauth2/sign_out', { headers: { ...NAV, cookie } })))
    assert.equal(out.status, 302)
    assert.ok(g.logs.some((l) => (l.obj as { event?: string }).event === 'session_revocation_not_stored'))
    await assert.rejects(g.list.reload(), StoreUnavailableError)
    // A cold cache (another cookie value of the same session would decrypt again): the list still says no.
    g.codec.forget(cookie.split('=')[1]!)
    const other = await instance(flaky)
    assert.equal(
      respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
    down = false
    await g.list.reload()
    assert.equal((await memory.listSessionRevocations(0)).length, 1)
    await other.list.reload()
    assert.equal(
      respond(await other.gatehouse.handle(facts('/api', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
  })
})

describe('the revocation list', () => {
  test('a reload that reads while a revocation is still being written keeps it', async () => {
    const memory = createMemoryStore()
    let release: () => void = () => {}
    const slow: SessionRevocationStore = {
      revokeSessions: async (e) => {
        await new Promise<void>((r) => {
          release = r
        })
        await memory.revokeSessions(e)
      },
      listSessionRevocations: (n) => memory.listSessionRevocations(n),
      listSessionRevocationsSince: (n, since) => memory.listSessionRevocationsSince(n, since),
      getSessionRevocation: (k, v) => memory.getSessionRevocation(k, v),
      pruneSessionRevocations: (n) => memory.pruneSessionRevocations(n),
    }
    const clock = { now: () => Date.UTC(2026, 0, 1) }
    const list = createSessionRevocationList({ store: slow, clock, log: silent, maxTtlSeconds: MAX_TTL })
    const session = { sid: 's-race', identity: { sub: 'alice' }, signedInAt: 0 }
    const writing = list.revoke([{ kind: 'sid', value: 's-race' }])
    assert.equal(list.isRevoked(session), true, 'refused at once')
    await list.reload()
    assert.equal(list.isRevoked(session), true, 'kept by a reload that read before the write')
    release()
    await writing
    await list.reload()
    assert.equal(list.isRevoked(session), true)
  })
})

describe('the periodic refresh', () => {
  /** Two instances on one store, a frozen clock, and the store calls instance B makes. */
  function twoInstances() {
    let now = Date.UTC(2026, 0, 1)
    const clock = { now: () => now }
    const memory = createMemoryStore({ clock })
    const calls: string[] = []
    const rows: number[] = []
    const counted: SessionRevocationStore = {
      ...memory,
      listSessionRevocations: async (n) => {
        const list = await memory.listSessionRevocations(n)
        calls.push('full')
        rows.push(list.length)
        return list
      },
      listSessionRevocationsSince: async (n, since) => {
        const list = await memory.listSessionRevocationsSince(n, since)
        calls.push('since')
        rows.push(list.length)
        return list
      },
    }
    const options = { clock, log: silent, maxTtlSeconds: MAX_TTL }
    const a = createSessionRevocationList({ ...options, store: memory })
    const b = createSessionRevocationList({ ...options, store: counted })
    const advance = (ms: number) => {
      now += ms
    }
    return { a, b, calls, rows, advance }
  }
  const session = (sid: string) => ({ sid, identity: { sub: 'alice' }, signedInAt: 0 })

  test("a tick after another instance's revocation picks it up by reading only what was stored since", async () => {
    const { a, b, calls, rows, advance } = twoInstances()
    await a.revoke(Array.from({ length: 50 }, (_, i) => ({ kind: 'sid' as const, value: `old-${i}` })))
    advance(600_000)
    await a.revoke([{ kind: 'sid', value: 's-latest' }])
    await b.reload()
    assert.deepEqual(calls, ['full'])
    advance(5_000)
    await a.revoke([{ kind: 'sid', value: 's-new' }])
    assert.equal(b.isRevoked(session('s-new')), false)
    advance(5_000)
    await b.refresh()
    assert.equal(b.isRevoked(session('s-new')), true)
    assert.equal(b.isRevoked(session('old-7')), true)
    assert.deepEqual(calls, ['full', 'since'], 'the whole list is not read again')
    // The tick rereads REFRESH_OVERLAP_SECONDS behind the latest storedAt seen: s-latest, and s-new.
    assert.deepEqual(rows, [51, 2], 'rows read: the whole list, then only those stored since')
    assert.equal(b.size, 52)
  })

  test('every 5 minutes the tick reloads the whole list, which forgets what expired', async () => {
    const { a, b, calls, advance } = twoInstances()
    const t = Math.floor(Date.UTC(2026, 0, 1) / 1000)
    await a.revoke([{ kind: 'sid', value: 's-short', expiresAt: t + 60 }])
    await b.reload()
    assert.equal(b.isRevoked(session('s-short')), true)
    advance(120_000)
    await b.refresh()
    assert.deepEqual(calls, ['full', 'since'])
    assert.equal(b.size, 1, 'an incremental tick does not drop entries')
    advance(FULL_RELOAD_MS - 120_000)
    await b.refresh()
    assert.deepEqual(calls, ['full', 'since', 'full'])
    assert.equal(b.isRevoked(session('s-short')), false)
    assert.equal(b.size, 0)
  })

  test('a revocation the store could not take is stored by the next incremental tick', async () => {
    let now = Date.UTC(2026, 0, 1)
    const clock = { now: () => now }
    const memory = createMemoryStore({ clock })
    let down = false
    const flaky: SessionRevocationStore = {
      ...memory,
      revokeSessions: (e) =>
        down ? Promise.reject(new StoreUnavailableError('PostgreSQL', 'down')) : memory.revokeSessions(e),
    }
    const list = createSessionRevocationList({ store: flaky, clock, log: silent, maxTtlSeconds: MAX_TTL })
    await list.revoke([{ kind: 'sid', value: 's-1' }])
    await list.reload()
    down = true
    await assert.rejects(list.revoke([{ kind: 'sid', value: 's-2' }]), StoreUnavailableError)
    down = false
    now += 5_000
    await list.refresh()
    assert.deepEqual(
      (await memory.listSessionRevocations(0)).map((r) => r.value),
      ['s-1', 's-2'],
    )
    assert.equal(list.isRevoked(session('s-2')), true)
  })
})

describe('a session the provider ended at a refresh', () => {
  test('POST /oauth2/refresh refused with invalid_grant: the same cookie is refused afterwards, not served', async () => {
    const g = await instance()
    const { cookie } = await signIn(g)
    g.provider.state.refresh = async () => {
      throw new ProviderRejectedError('invalid_grant', 'grant revoked')
    }
    const r = respond(
      await g.gatehouse.handle(facts('/oauth2/refresh', { method: 'POST', headers: { ...API, cookie } })),
    )
    assert.equal(r.status, 401)
    assert.equal(r.code, 'session_expired')
    // The access token still has most of its hour: before Gatehouse 8 this request passed.
    const next = respond(await g.gatehouse.handle(facts('/api', { headers: { ...API, cookie } })))
    assert.equal(next.status, 401)
    assert.equal(next.code, 'session_expired')
    assert.equal(g.gatehouse.classify(facts('/api', { headers: { ...API, cookie } })), 'rejected')
    assert.equal(g.provider.calls.refresh, 1)
  })
})
