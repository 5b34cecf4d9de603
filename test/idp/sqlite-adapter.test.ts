import assert from 'node:assert/strict'
import { DatabaseSync } from 'node:sqlite'
import { beforeEach, describe, it } from 'node:test'

import { createSQLiteAdapter, type SQLiteAdapterFactory } from '../../src/idp/sqlite-adapter.ts'

describe('createSQLiteAdapter', () => {
  let nowMs: number
  let db: DatabaseSync
  let factory: SQLiteAdapterFactory

  beforeEach(() => {
    nowMs = Date.UTC(2026, 5, 1)
    db = new DatabaseSync(':memory:')
    factory = createSQLiteAdapter(db, { now: () => nowMs, pruneIntervalMs: 60_000 })
  })

  function rowCount(): number {
    return Number((db.prepare('SELECT count(*) AS n FROM idp_oidc_models').get() as { n: number }).n)
  }

  it('stores and finds a payload per model', async () => {
    const sessions = factory('Session')
    const tokens = factory('AccessToken')
    await sessions.upsert('id-1', { uid: 'u-1', accountId: 'sub-1' }, 60)
    await tokens.upsert('id-1', { grantId: 'g-1', kind: 'AccessToken' }, 60)
    assert.deepEqual(await sessions.find('id-1'), { uid: 'u-1', accountId: 'sub-1' })
    assert.deepEqual(await tokens.find('id-1'), { grantId: 'g-1', kind: 'AccessToken' })
    assert.equal(await sessions.find('id-2'), undefined)
  })

  it('replaces the payload on a second upsert', async () => {
    const grants = factory('Grant')
    await grants.upsert('g-1', { openid: { scope: 'openid' } }, 60)
    await grants.upsert('g-1', { openid: { scope: 'openid email' } }, 60)
    assert.deepEqual(await grants.find('g-1'), { openid: { scope: 'openid email' } })
    assert.equal(rowCount(), 1)
  })

  it('stops returning a row once expiresIn has passed', async () => {
    const codes = factory('AuthorizationCode')
    await codes.upsert('c-1', { grantId: 'g-1' }, 10)
    nowMs += 9_999
    assert.ok(await codes.find('c-1'))
    nowMs += 1
    assert.equal(await codes.find('c-1'), undefined)
  })

  it('keeps a row without expiresIn', async () => {
    const clients = factory('Client')
    await clients.upsert('client-1', { client_id: 'client-1' }, undefined)
    nowMs += 10 * 365 * 24 * 3600 * 1000
    assert.deepEqual(await clients.find('client-1'), { client_id: 'client-1' })
  })

  it('marks a row consumed (epoch seconds) and a new upsert starts unconsumed', async () => {
    const refreshTokens = factory('RefreshToken')
    await refreshTokens.upsert('rt-1', { grantId: 'g-1' }, 60)
    await refreshTokens.consume('rt-1')
    assert.deepEqual(await refreshTokens.find('rt-1'), { grantId: 'g-1', consumed: Math.floor(nowMs / 1000) })
    await refreshTokens.upsert('rt-1', { grantId: 'g-1' }, 60)
    assert.deepEqual(await refreshTokens.find('rt-1'), { grantId: 'g-1' })
  })

  it('destroys a row', async () => {
    const interactions = factory('Interaction')
    await interactions.upsert('i-1', { returnTo: '/' }, 60)
    await interactions.destroy('i-1')
    assert.equal(await interactions.find('i-1'), undefined)
    await interactions.destroy('i-1')
  })

  it('finds sessions by uid and device codes by user code, within their model only', async () => {
    await factory('Session').upsert('s-1', { uid: 'uid-1' }, 60)
    await factory('DeviceCode').upsert('d-1', { userCode: 'ABCD-EFGH', grantId: 'g-1' }, 60)
    assert.deepEqual(await factory('Session').findByUid('uid-1'), { uid: 'uid-1' })
    assert.equal(await factory('Interaction').findByUid('uid-1'), undefined)
    assert.deepEqual(await factory('DeviceCode').findByUserCode('ABCD-EFGH'), {
      userCode: 'ABCD-EFGH',
      grantId: 'g-1',
    })
    nowMs += 60_000
    assert.equal(await factory('Session').findByUid('uid-1'), undefined)
    assert.equal(await factory('DeviceCode').findByUserCode('ABCD-EFGH'), undefined)
  })

  it('revokes every token of a grant, across models, and nothing else', async () => {
    await factory('AccessToken').upsert('at-1', { grantId: 'g-1' }, 60)
    await factory('RefreshToken').upsert('rt-1', { grantId: 'g-1' }, 60)
    await factory('AuthorizationCode').upsert('c-1', { grantId: 'g-1' }, 60)
    await factory('RefreshToken').upsert('rt-2', { grantId: 'g-2' }, 60)
    await factory('Grant').upsert('g-1', { accountId: 'sub-1' }, 60)
    await factory('Interaction').upsert('i-1', { grantId: 'g-1' }, 60)

    await factory('RefreshToken').revokeByGrantId('g-1')

    assert.equal(await factory('AccessToken').find('at-1'), undefined)
    assert.equal(await factory('RefreshToken').find('rt-1'), undefined)
    assert.equal(await factory('AuthorizationCode').find('c-1'), undefined)
    assert.ok(await factory('RefreshToken').find('rt-2'))
    assert.ok(await factory('Grant').find('g-1'), 'the grant itself is destroyed by oidc-provider, not here')
    assert.ok(await factory('Interaction').find('i-1'), 'interactions are not grant members')
  })

  it('sweeps expired rows on a write once the prune interval has passed', async () => {
    const tokens = factory('AccessToken')
    await tokens.upsert('short', { grantId: 'g' }, 1)
    await tokens.upsert('long', { grantId: 'g' }, 3600)
    nowMs += 2_000
    await tokens.upsert('other', { grantId: 'g' }, 3600)
    assert.equal(rowCount(), 3, 'the interval has not passed: expired row still stored (but not returned)')
    nowMs += 60_000
    await tokens.upsert('trigger', { grantId: 'g' }, 3600)
    assert.equal(rowCount(), 3, 'short is gone, long, other and trigger remain')
    assert.equal(await tokens.find('short'), undefined)
    assert.ok(await tokens.find('long'))
  })

  it('prunes on demand and reports how many rows went', async () => {
    await factory('Session').upsert('a', { uid: 'a' }, 1)
    await factory('Session').upsert('b', { uid: 'b' }, 1)
    await factory('Session').upsert('c', { uid: 'c' }, 100)
    nowMs += 1_000
    assert.equal(factory.prune(), 2)
    assert.equal(factory.prune(), 0)
    assert.equal(rowCount(), 1)
  })

  it('persists: a new adapter on the same database reads what the first wrote', async () => {
    await factory('Grant').upsert('g-1', { accountId: 'sub-1' }, 60)
    const reopened = createSQLiteAdapter(db, { now: () => nowMs })
    assert.deepEqual(await reopened('Grant').find('g-1'), { accountId: 'sub-1' })
  })
})
