import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'

import { TokenExistsError } from '../../src/store/errors.ts'
import type {
  AlertRecord,
  AlertStore,
  AuditStore,
  CacheStore,
  KeyRecord,
  KeyStore,
  SessionRevocationStore,
  StoredSessionRevocation,
  TokenRecord,
  TokenStore,
} from '../../src/store/ports.ts'

export type Store = KeyStore & TokenStore & CacheStore

/** Seconds since the epoch; every time in these tests is relative to it. */
const T = 1_767_225_600 // 2026-01-01T00:00:00Z

export function key(kid: string, overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    kid,
    alg: 'EdDSA',
    state: 'next',
    publicJwk: { kty: 'OKP', crv: 'Ed25519', x: `x-${kid}`, kid, alg: 'EdDSA', use: 'sig' },
    privateJwe: `jwe.${kid}`,
    createdAt: T,
    activatesAt: T + 3600,
    retiresAt: T + 30 * 86_400,
    removeAt: T + 60 * 86_400,
    ...overrides,
  }
}

export function token(jti: string, overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    jti,
    subject: 'ci-bot',
    scopes: ['deploy', 'read'],
    audience: 'https://api.example.com',
    parentJti: undefined,
    issuedAt: T,
    expiresAt: T + 86_400,
    revokedAt: undefined,
    description: undefined,
    ...overrides,
  }
}

function jtis(tokens: readonly { jti: string }[]): string[] {
  return tokens.map((t) => t.jti)
}

/**
 * The behaviour every `KeyStore & TokenStore` implementation must have. `open` gives a fresh, empty store
 * for each test.
 */
export function storeContract(
  name: string,
  open: () => Promise<{ store: Store; close(): Promise<void> }>,
): void {
  describe(name, () => {
    let store: Store
    let close: () => Promise<void>

    beforeEach(async () => {
      const opened = await open()
      store = opened.store
      close = () => opened.close()
    })

    afterEach(async () => {
      await close()
    })

    describe('keys', () => {
      it('inserts and lists keys, oldest first', async () => {
        assert.deepEqual(await store.listKeys(), [])
        const older = key('k-1', { state: 'current', alg: 'ES256' })
        const newer = key('k-2', { createdAt: T + 10 })
        assert.equal(await store.insertKey(newer), true)
        assert.equal(await store.insertKey(older), true)
        assert.deepEqual(await store.listKeys(), [older, newer])
      })

      it('refuses a duplicate kid and keeps the first key', async () => {
        const first = key('k-1')
        assert.equal(await store.insertKey(first), true)
        assert.equal(await store.insertKey(key('k-1', { state: 'current', privateJwe: 'other' })), false)
        assert.deepEqual(await store.listKeys(), [first])
      })

      it('transitions a key only from the state it is in (compare-and-set)', async () => {
        await store.insertKey(key('k-1', { state: 'next' }))
        assert.equal(await store.transitionKey('k-1', 'next', 'current'), true)
        // Another instance making the same move second loses.
        assert.equal(await store.transitionKey('k-1', 'next', 'current'), false)
        assert.equal(await store.transitionKey('k-1', 'next', 'retired'), false)
        assert.equal(await store.transitionKey('missing', 'next', 'current'), false)
        assert.equal((await store.listKeys())[0]?.state, 'current')
        assert.equal(await store.transitionKey('k-1', 'current', 'retired'), true)
        assert.equal((await store.listKeys())[0]?.state, 'retired')
      })

      it('deletes a key once', async () => {
        await store.insertKey(key('k-1'))
        await store.insertKey(key('k-2'))
        assert.equal(await store.deleteKey('k-1'), true)
        assert.equal(await store.deleteKey('k-1'), false)
        assert.equal(await store.deleteKey('missing'), false)
        assert.deepEqual(
          (await store.listKeys()).map((k) => k.kid),
          ['k-2'],
        )
      })

      it('refuses times that are not whole seconds', async () => {
        await assert.rejects(store.insertKey(key('k-1', { activatesAt: T + 0.5 })), TypeError)
        assert.deepEqual(await store.listKeys(), [])
      })
    })

    describe('tokens', () => {
      it('inserts and gets a token, optional fields included', async () => {
        const bare = token('t-1')
        const full = token('t-2', { parentJti: 't-1', revokedAt: T + 5, description: 'deploys from CI' })
        await store.insertToken(bare)
        await store.insertToken(full)
        assert.deepEqual(await store.getToken('t-1'), bare)
        assert.deepEqual(await store.getToken('t-2'), full)
        assert.equal(await store.getToken('missing'), undefined)
      })

      it('refuses a duplicate jti with ERR_TOKEN_EXISTS and leaves the original unchanged', async () => {
        const original = token('t-1', { description: 'first' })
        await store.insertToken(original)
        await assert.rejects(
          store.insertToken(
            token('t-1', { subject: 'someone-else', scopes: ['admin'], description: 'second' }),
          ),
          (error: unknown) => {
            assert.ok(error instanceof TokenExistsError)
            assert.ok(!(error instanceof TypeError))
            assert.equal(error.code, 'ERR_TOKEN_EXISTS')
            return true
          },
        )
        assert.deepEqual(await store.getToken('t-1'), original)
        assert.deepEqual(jtis(await store.listTokens({ includeExpired: true, now: T })), ['t-1'])
      })

      it('refuses times that are not whole seconds', async () => {
        await assert.rejects(store.insertToken(token('t-1', { expiresAt: T + 1.5 })), TypeError)
        await assert.rejects(store.insertToken(token('t-2', { revokedAt: Number.NaN })), TypeError)
        assert.equal(await store.getToken('t-1'), undefined)
        assert.equal(await store.getToken('t-2'), undefined)
      })

      it('lists newest first, jti breaking ties', async () => {
        await store.insertToken(token('b', { issuedAt: T + 10 }))
        await store.insertToken(token('old', { issuedAt: T }))
        await store.insertToken(token('a', { issuedAt: T + 10 }))
        await store.insertToken(token('new', { issuedAt: T + 20 }))
        assert.deepEqual(jtis(await store.listTokens({ now: T })), ['new', 'b', 'a', 'old'])
      })

      it('lists only unexpired tokens (expiresAt > now) unless expired ones are asked for', async () => {
        await store.insertToken(token('expired', { issuedAt: T - 100, expiresAt: T - 1 }))
        await store.insertToken(token('expires-now', { issuedAt: T - 50, expiresAt: T }))
        await store.insertToken(token('live', { issuedAt: T - 10, expiresAt: T + 1 }))
        assert.deepEqual(jtis(await store.listTokens({ now: T })), ['live'])
        assert.deepEqual(jtis(await store.listTokens({ now: T, includeExpired: false })), ['live'])
        assert.deepEqual(jtis(await store.listTokens({ now: T - 1 })), ['live', 'expires-now'])
        assert.deepEqual(jtis(await store.listTokens({ now: T, includeExpired: true })), [
          'live',
          'expires-now',
          'expired',
        ])
      })

      it('lists against the current time when no now is given', async () => {
        // Far enough on either side of today that the real clock decides without waiting.
        await store.insertToken(token('long-gone', { issuedAt: 0, expiresAt: 1 }))
        await store.insertToken(token('far-future', { issuedAt: 1, expiresAt: 2 ** 40 }))
        assert.deepEqual(jtis(await store.listTokens()), ['far-future'])
        assert.deepEqual(jtis(await store.listTokens({ includeExpired: true })), ['far-future', 'long-gone'])
      })

      it('lists descendants across generations, not the token itself nor its siblings', async () => {
        // root ─┬─ a ── a1 ── a1x        other ── o1
        //       └─ b (expired, revoked)
        await store.insertToken(token('root'))
        await store.insertToken(token('a', { parentJti: 'root', issuedAt: T + 1 }))
        await store.insertToken(
          token('b', { parentJti: 'root', issuedAt: T + 2, expiresAt: T + 3, revokedAt: T + 2 }),
        )
        await store.insertToken(token('a1', { parentJti: 'a', issuedAt: T + 3 }))
        await store.insertToken(token('a1x', { parentJti: 'a1', issuedAt: T + 4 }))
        await store.insertToken(token('other'))
        await store.insertToken(token('o1', { parentJti: 'other', issuedAt: T + 5 }))

        const sorted = async (jti: string) => jtis(await store.listDescendants(jti)).sort()
        assert.deepEqual(await sorted('root'), ['a', 'a1', 'a1x', 'b'])
        assert.deepEqual(await sorted('a'), ['a1', 'a1x'])
        assert.deepEqual(await sorted('a1'), ['a1x'])
        assert.deepEqual(await sorted('a1x'), [])
        assert.deepEqual(await sorted('b'), [])
        assert.deepEqual(await sorted('other'), ['o1'])
        assert.deepEqual(await sorted('missing'), [])
        assert.deepEqual(
          (await store.listDescendants('a')).find((t) => t.jti === 'a1'),
          await store.getToken('a1'),
        )
      })

      it('stops on a cycle of parent links', async () => {
        await store.insertToken(token('x', { parentJti: 'y' }))
        await store.insertToken(token('y', { parentJti: 'x' }))
        assert.deepEqual(jtis(await store.listDescendants('x')), ['y'])
      })

      it('revokes, keeping the first revokedAt, and counts only the tokens it changed', async () => {
        for (const jti of ['a', 'b', 'c', 'd']) await store.insertToken(token(jti))
        assert.equal(await store.revokeTokens(['a', 'b'], T + 100), 2)
        assert.equal(await store.revokeTokens(['b', 'c', 'missing', 'c'], T + 200), 1)
        assert.equal(await store.revokeTokens([], T + 300), 0)
        assert.equal((await store.getToken('a'))?.revokedAt, T + 100)
        assert.equal((await store.getToken('b'))?.revokedAt, T + 100)
        assert.equal((await store.getToken('c'))?.revokedAt, T + 200)
        assert.equal((await store.getToken('d'))?.revokedAt, undefined)
      })

      it('lists revoked tokens that have not expired yet, with their expiry', async () => {
        await store.insertToken(token('revoked-live', { expiresAt: T + 60 }))
        await store.insertToken(token('revoked-expired', { expiresAt: T }))
        await store.insertToken(token('unrevoked', { expiresAt: T + 60 }))
        await store.insertToken(token('revoked-at-insert', { expiresAt: T + 30, revokedAt: T - 1 }))
        await store.revokeTokens(['revoked-live', 'revoked-expired'], T - 10)
        const revoked = await store.listRevoked(T)
        assert.deepEqual(
          revoked.sort((x, y) => (x.jti < y.jti ? -1 : 1)),
          [
            { jti: 'revoked-at-insert', expiresAt: T + 30 },
            { jti: 'revoked-live', expiresAt: T + 60 },
          ],
        )
        assert.deepEqual(await store.listRevoked(T + 60), [])
      })
    })

    describe('copies', () => {
      it('keeps keys apart from the objects passed in and handed out', async () => {
        const input = key('k-1')
        await store.insertKey(input)
        input.state = 'retired'
        input.publicJwk['x'] = 'changed-input'

        const [listed] = await store.listKeys()
        assert.ok(listed)
        listed.state = 'retired'
        listed.publicJwk['x'] = 'changed-output'

        assert.deepEqual(await store.listKeys(), [key('k-1')])
      })

      it('keeps tokens apart from the objects passed in and handed out', async () => {
        const input = token('t-1')
        await store.insertToken(input)
        input.scopes.push('admin')
        input.subject = 'changed-input'

        const got = await store.getToken('t-1')
        assert.ok(got)
        got.scopes.push('admin')
        got.revokedAt = T

        const [listed] = await store.listTokens({ now: T })
        assert.ok(listed)
        listed.scopes.length = 0
        listed.expiresAt = 0

        await store.insertToken(token('child', { parentJti: 't-1' }))
        const [child] = await store.listDescendants('t-1')
        assert.ok(child)
        child.scopes.push('admin')

        assert.deepEqual(await store.getToken('t-1'), token('t-1'))
        assert.deepEqual(await store.getToken('child'), token('child', { parentJti: 't-1' }))
        assert.deepEqual(await store.listRevoked(T), [])
      })
    })
  })
}

/** The cache port: last known good copies, replaced whole. */
export function cacheContract(
  name: string,
  open: () => Promise<{ store: CacheStore; close(): Promise<void> }>,
): void {
  describe(`${name}: cache`, () => {
    it('returns nothing for an unknown key, then the last copy put, replaced whole', async () => {
      const { store, close } = await open()
      try {
        assert.equal(await store.getCached('provider:jwks'), undefined)
        await store.putCached('provider:jwks', '{"keys":[1]}', 1_000)
        await store.putCached('provider:discovery', '{"issuer":"x"}', 1_001)
        await store.putCached('provider:jwks', '{"keys":[2]}', 2_000)
        assert.deepEqual(await store.getCached('provider:jwks'), { value: '{"keys":[2]}', fetchedAt: 2_000 })
        assert.deepEqual(await store.getCached('provider:discovery'), {
          value: '{"issuer":"x"}',
          fetchedAt: 1_001,
        })
        const copy = await store.getCached('provider:jwks')
        copy!.value = 'changed'
        assert.equal((await store.getCached('provider:jwks'))!.value, '{"keys":[2]}')
        await assert.rejects(store.putCached('k', 'v', 1.5), TypeError)
      } finally {
        await close()
      }
    })
  })
}

export function alert(credential: string, overrides: Partial<AlertRecord> = {}): AlertRecord {
  return {
    credential,
    thresholdSeconds: 7 * 86_400,
    expiresAt: T + 5 * 86_400,
    sentAt: undefined,
    attempts: 0,
    nextAttemptAt: T,
    lastError: undefined,
    ...overrides,
  }
}

/** Expiry alert state (Gatehouse 5): what was sent survives a restart, and renewals re-arm. */
export function alertContract(
  name: string,
  open: () => Promise<{ store: AlertStore; close(): Promise<void> }>,
): void {
  describe(`${name}: alerts`, () => {
    it('stores one record per credential and threshold, replaced whole, listed in order', async () => {
      const { store, close } = await open()
      try {
        assert.deepEqual(await store.listAlerts(), [])
        const pending = alert('tls_certificate:upstream', { attempts: 1, lastError: 'HTTP 500' })
        await store.putAlert(pending)
        await store.putAlert(alert('client_secret:provider', { thresholdSeconds: 30 * 86_400 }))
        await store.putAlert(alert('client_secret:provider', { thresholdSeconds: 0 }))
        const sent = { ...pending, sentAt: T + 60, attempts: 1, lastError: undefined }
        await store.putAlert(sent)
        assert.deepEqual(await store.listAlerts(), [
          alert('client_secret:provider', { thresholdSeconds: 0 }),
          alert('client_secret:provider', { thresholdSeconds: 30 * 86_400 }),
          sent,
        ])
        const copy = (await store.listAlerts())[0]!
        copy.attempts = 99
        assert.equal((await store.listAlerts())[0]!.attempts, 0)
      } finally {
        await close()
      }
    })

    it('forgets every threshold of one credential, and only of that one', async () => {
      const { store, close } = await open()
      try {
        await store.putAlert(alert('a', { thresholdSeconds: 86_400 }))
        await store.putAlert(alert('a', { thresholdSeconds: 7 * 86_400 }))
        await store.putAlert(alert('b'))
        assert.equal(await store.deleteAlerts('a'), 2)
        assert.equal(await store.deleteAlerts('a'), 0)
        assert.deepEqual(
          (await store.listAlerts()).map((a) => a.credential),
          ['b'],
        )
      } finally {
        await close()
      }
    })

    it('refuses fractional times and an empty credential', async () => {
      const { store, close } = await open()
      try {
        await assert.rejects(store.putAlert(alert('a', { expiresAt: 1.5 })), TypeError)
        await assert.rejects(store.putAlert(alert('')), TypeError)
        await assert.rejects(store.markSeen('k', 2.5), TypeError)
        assert.deepEqual(await store.listAlerts(), [])
      } finally {
        await close()
      }
    })

    it('remembers the first time a key was seen', async () => {
      const { store, close } = await open()
      try {
        assert.equal(await store.markSeen('secret:abc', T), T)
        assert.equal(await store.markSeen('secret:abc', T + 500), T)
        assert.equal(await store.markSeen('secret:def', T + 500), T + 500)
      } finally {
        await close()
      }
    })
  })
}

/** The audit log (Gatehouse 6): security events appended whole, listed oldest first from a time on. */
export function auditContract(
  name: string,
  open: () => Promise<{ store: AuditStore; close(): Promise<void> }>,
): void {
  const T = 1_767_225_600
  describe(`${name}: audit`, () => {
    it('appends events and lists those since a time, oldest first, the newest when limited', async () => {
      const { store, close } = await open()
      try {
        assert.deepEqual(await store.listAudit({ since: 0 }), [])
        await store.appendAudit([
          { at: T, type: 'sign_in', subject: 'alice', detail: { sid: 's-1' } },
          {
            at: T + 10,
            type: 'token_issued',
            subject: 'ci-bot',
            detail: { jti: 't-1', expiresAt: T + 86_400 },
          },
        ])
        await store.appendAudit([])
        await store.appendAudit([
          { at: T + 10, type: 'token_revoked', subject: 'ci-bot', detail: { jti: 't-1', cascade: 0 } },
          {
            at: T + 20,
            type: 'rate_limit_tripped',
            subject: undefined,
            detail: { bucket: 'client', held: true },
          },
        ])
        const all = await store.listAudit({ since: 0 })
        assert.deepEqual(
          all.map((e) => e.type),
          ['sign_in', 'token_issued', 'token_revoked', 'rate_limit_tripped'],
        )
        assert.deepEqual(all[1], {
          at: T + 10,
          type: 'token_issued',
          subject: 'ci-bot',
          detail: { jti: 't-1', expiresAt: T + 86_400 },
        })
        assert.equal(all[3]!.subject, undefined)
        assert.deepEqual(
          (await store.listAudit({ since: T + 10 })).map((e) => e.type),
          ['token_issued', 'token_revoked', 'rate_limit_tripped'],
        )
        assert.deepEqual(
          (await store.listAudit({ since: 0, limit: 2 })).map((e) => e.type),
          ['token_revoked', 'rate_limit_tripped'],
        )
        all[0]!.detail['sid'] = 'changed'
        assert.equal((await store.listAudit({ since: 0 }))[0]!.detail['sid'], 's-1')
      } finally {
        await close()
      }
    })

    it('prunes events older than a time, and only those', async () => {
      const { store, close } = await open()
      try {
        await store.appendAudit([
          { at: T, type: 'sign_in', subject: 'old', detail: {} },
          { at: T + 100, type: 'sign_in', subject: 'edge', detail: {} },
          { at: T + 200, type: 'sign_out', subject: 'new', detail: {} },
        ])
        assert.equal(await store.pruneAudit(T + 100), 1)
        assert.deepEqual(
          (await store.listAudit({ since: 0 })).map((e) => e.subject),
          ['edge', 'new'],
        )
        assert.equal(await store.pruneAudit(T + 100), 0, 'nothing more to prune')
        await assert.rejects(store.pruneAudit(Number.NaN), TypeError)
      } finally {
        await close()
      }
    })

    it('appends all or nothing: one bad event refuses the whole batch', async () => {
      const { store, close } = await open()
      try {
        await assert.rejects(
          store.appendAudit([
            { at: T, type: 'sign_out', subject: 'alice', detail: {} },
            { at: T + 0.5, type: 'sign_out', subject: 'bob', detail: {} },
          ]),
          TypeError,
        )
        await assert.rejects(
          store.appendAudit([{ at: T, type: 'made_up' as 'sign_out', subject: undefined, detail: {} }]),
          TypeError,
        )
        assert.deepEqual(await store.listAudit({ since: 0 }), [])
      } finally {
        await close()
      }
    })
  })
}

/** Session revocations (Gatehouse 8): a list that never shrinks before its entries expire. */
/**
 * `later(seconds)`: what is written from now on is stored at least that much later than what was before
 * (a clock moved on, or the rows stored so far dated back).
 */
export function sessionRevocationContract(
  name: string,
  open: () => Promise<{
    store: SessionRevocationStore
    close(): Promise<void>
    later(seconds: number): Promise<void>
  }>,
): void {
  const T = 1_767_225_600
  const unstamped = (list: StoredSessionRevocation[]) => list.map(({ storedAt: _, ...r }) => r)
  describe(`${name}: session revocations`, () => {
    it('stores revocations by session, user and provider session, lists those in force in order', async () => {
      const { store, close } = await open()
      try {
        assert.deepEqual(await store.listSessionRevocations(T), [])
        await store.revokeSessions([
          { kind: 'sid', value: 's-2', revokedAt: T, expiresAt: T + 600 },
          { kind: 'sub', value: 'alice', revokedAt: T, expiresAt: T + 300 },
        ])
        await store.revokeSessions([])
        await store.revokeSessions([
          { kind: 'psid', value: 'op-sid-1', revokedAt: T + 1, expiresAt: T + 300 },
        ])
        assert.deepEqual(unstamped(await store.listSessionRevocations(T)), [
          { kind: 'psid', value: 'op-sid-1', revokedAt: T + 1, expiresAt: T + 300 },
          { kind: 'sub', value: 'alice', revokedAt: T, expiresAt: T + 300 },
          { kind: 'sid', value: 's-2', revokedAt: T, expiresAt: T + 600 },
        ])
        // In force strictly before expiresAt.
        assert.deepEqual(
          (await store.listSessionRevocations(T + 300)).map((r) => r.value),
          ['s-2'],
        )
        assert.deepEqual(await store.getSessionRevocation('sub', 'alice'), {
          kind: 'sub',
          value: 'alice',
          revokedAt: T,
          expiresAt: T + 300,
        })
        assert.equal(await store.getSessionRevocation('sid', 'alice'), undefined)
        const copy = (await store.listSessionRevocations(T))[0]!
        copy.expiresAt = 0
        assert.equal((await store.listSessionRevocations(T))[0]!.expiresAt, T + 300)
      } finally {
        await close()
      }
    })

    it('never shrinks a revocation: the later revokedAt and the later expiry are kept', async () => {
      const { store, close } = await open()
      try {
        await store.revokeSessions([{ kind: 'sub', value: 'alice', revokedAt: T + 50, expiresAt: T + 500 }])
        await store.revokeSessions([{ kind: 'sub', value: 'alice', revokedAt: T + 10, expiresAt: T + 900 }])
        assert.deepEqual(await store.getSessionRevocation('sub', 'alice'), {
          kind: 'sub',
          value: 'alice',
          revokedAt: T + 50,
          expiresAt: T + 900,
        })
        // The same one twice in one call is one entry.
        await store.revokeSessions([
          { kind: 'sid', value: 's-1', revokedAt: T, expiresAt: T + 100 },
          { kind: 'sid', value: 's-1', revokedAt: T + 5, expiresAt: T + 50 },
        ])
        assert.deepEqual(await store.getSessionRevocation('sid', 's-1'), {
          kind: 'sid',
          value: 's-1',
          revokedAt: T + 5,
          expiresAt: T + 100,
        })
      } finally {
        await close()
      }
    })

    it('prunes revocations no longer in force, and only those', async () => {
      const { store, close } = await open()
      try {
        await store.revokeSessions([
          { kind: 'sid', value: 'a', revokedAt: T, expiresAt: T + 100 },
          { kind: 'sid', value: 'b', revokedAt: T, expiresAt: T + 200 },
        ])
        assert.equal(await store.pruneSessionRevocations(T + 100), 1)
        assert.equal(await store.pruneSessionRevocations(T + 100), 0)
        assert.equal(await store.getSessionRevocation('sid', 'a'), undefined)
        assert.deepEqual(
          (await store.listSessionRevocations(0)).map((r) => r.value),
          ['b'],
        )
      } finally {
        await close()
      }
    })

    it('lists what was stored since a storedAt: an upsert moves it forward, expired ones are left out', async () => {
      const { store, close, later } = await open()
      try {
        await store.revokeSessions([
          { kind: 'sid', value: 'old', revokedAt: T, expiresAt: T + 600 },
          { kind: 'sub', value: 'alice', revokedAt: T, expiresAt: T + 600 },
        ])
        const first = await store.listSessionRevocations(T)
        const stamp = first[0]!.storedAt
        assert.ok(Number.isSafeInteger(stamp))
        assert.deepEqual(
          first.map((r) => r.storedAt),
          [stamp, stamp],
        )
        assert.deepEqual(
          (await store.listSessionRevocationsSince(T, stamp)).map((r) => r.value),
          ['old', 'alice'],
        )
        await later(100)
        await store.revokeSessions([
          { kind: 'sub', value: 'alice', revokedAt: T + 5, expiresAt: T + 600 },
          { kind: 'sid', value: 'new', revokedAt: T, expiresAt: T + 700 },
          { kind: 'sid', value: 'gone', revokedAt: T, expiresAt: T + 10 },
        ])
        const oldAt = (await store.listSessionRevocations(T)).find((r) => r.value === 'old')!.storedAt
        const since = await store.listSessionRevocationsSince(T + 10, oldAt + 100)
        assert.deepEqual(unstamped(since), [
          { kind: 'sub', value: 'alice', revokedAt: T + 5, expiresAt: T + 600 },
          { kind: 'sid', value: 'new', revokedAt: T, expiresAt: T + 700 },
        ])
        const stamps = since.map((r) => r.storedAt)
        assert.ok(stamps.every((at) => at >= oldAt + 100))
        // `since` is inclusive; a row is listed only while in force (expiresAt > now).
        assert.deepEqual(
          (await store.listSessionRevocationsSince(T + 600, Math.min(...stamps))).map((r) => r.value),
          ['new'],
        )
        assert.deepEqual(await store.listSessionRevocationsSince(T, Math.max(...stamps) + 1), [])
        assert.deepEqual(
          (await store.listSessionRevocations(T + 10)).map((r) => r.value),
          ['old', 'alice', 'new'],
        )
      } finally {
        await close()
      }
    })

    it('refuses a bad entry and stores none of the call', async () => {
      const { store, close } = await open()
      try {
        const good = { kind: 'sid' as const, value: 'ok', revokedAt: T, expiresAt: T + 100 }
        await assert.rejects(
          store.revokeSessions([good, { kind: 'sid', value: 'x', revokedAt: T, expiresAt: 1.5 }]),
          TypeError,
        )
        await assert.rejects(store.revokeSessions([good, { ...good, value: '' }]), TypeError)
        await assert.rejects(store.revokeSessions([good, { ...good, value: 'has space' }]), TypeError)
        await assert.rejects(
          store.revokeSessions([good, { ...good, kind: 'jti' as unknown as 'sid' }]),
          TypeError,
        )
        assert.deepEqual(await store.listSessionRevocations(0), [])
      } finally {
        await close()
      }
    })
  })
}
