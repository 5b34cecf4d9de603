import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { after, before, beforeEach, describe, it } from 'node:test'

import { SchemaTooNewError } from '../../src/store/errors.ts'
import { createSQLiteStore } from '../../src/store/sqlite-store.ts'
import {
  alertContract,
  auditContract,
  cacheContract,
  key,
  sessionRevocationContract,
  storeContract,
  token,
} from './store-contract.ts'

let dir: string
let files = 0

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-store-'))
})

after(() => {
  rmSync(dir, { recursive: true, force: true })
})

function freshFile(): string {
  files++
  return join(dir, `store-${files}.db`)
}

const openSQLite = async () => {
  const db = new DatabaseSync(freshFile())
  return {
    store: createSQLiteStore(db),
    close: async () => db.close(),
  }
}
storeContract('SQLite store', openSQLite)
cacheContract('SQLite store', openSQLite)
alertContract('SQLite store', openSQLite)
auditContract('SQLite store', openSQLite)
sessionRevocationContract('SQLite store', async () => {
  let now = Date.UTC(2026, 0, 1)
  const db = new DatabaseSync(freshFile())
  return {
    store: createSQLiteStore(db, { clock: { now: () => now } }),
    close: async () => db.close(),
    later: async (seconds: number) => {
      now += seconds * 1000
    },
  }
})

describe('SQLite store on its own', () => {
  const T = 1_767_225_600
  let file: string

  beforeEach(() => {
    file = freshFile()
  })

  function schemaRows(db: DatabaseSync): string[] {
    const rows = db
      .prepare('SELECT component, version FROM gatehouse_schema ORDER BY component, version')
      .all()
    return rows.map((row) => `${row['component']} ${row['version']}`)
  }

  function objects(db: DatabaseSync): string[] {
    const rows = db
      .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
      .all()
    return rows.map((row) => `${row['type']} ${row['name']}`)
  }

  it('creates its tables and indexes, records the migration, and leaves other tables alone', () => {
    const db = new DatabaseSync(file)
    db.exec("CREATE TABLE idp_users (sub TEXT PRIMARY KEY); INSERT INTO idp_users VALUES ('u-1')")
    createSQLiteStore(db)
    assert.deepEqual(objects(db), [
      'table gatehouse_schema',
      'table gh_alerts',
      'table gh_audit',
      'index gh_audit_at',
      'table gh_cache',
      'table gh_first_seen',
      'table gh_keys',
      'table gh_session_revocations',
      'index gh_session_revocations_expires_at',
      'index gh_session_revocations_stored_at',
      'table gh_tokens',
      'index gh_tokens_parent_jti',
      'index gh_tokens_revoked_at',
      'table idp_users',
    ])
    assert.deepEqual(schemaRows(db), ['store 1', 'store 2', 'store 3', 'store 4', 'store 5', 'store 6'])
    assert.deepEqual(
      db
        .prepare('SELECT sub FROM idp_users')
        .all()
        .map((row) => row['sub']),
      ['u-1'],
    )
    db.close()
  })

  it('runs its migrations once: a second store on the same database changes nothing', async () => {
    const db = new DatabaseSync(file)
    const first = createSQLiteStore(db)
    await first.insertKey(key('k-1'))
    await first.insertToken(token('t-1'))
    const before = objects(db)

    const second = createSQLiteStore(db)
    assert.deepEqual(objects(db), before)
    assert.deepEqual(schemaRows(db), ['store 1', 'store 2', 'store 3', 'store 4', 'store 5', 'store 6'])
    assert.deepEqual(await second.listKeys(), [key('k-1')])
    assert.deepEqual(await second.getToken('t-1'), token('t-1'))
    db.close()
  })

  it('keeps keys and tokens across closing and reopening the file', async () => {
    const db = new DatabaseSync(file)
    const store = createSQLiteStore(db)
    await store.insertKey(key('k-1', { state: 'current' }))
    await store.insertToken(token('t-1', { description: 'kept' }))
    await store.insertToken(token('t-2', { parentJti: 't-1' }))
    await store.revokeTokens(['t-2'], T + 5)
    db.close()

    const reopened = new DatabaseSync(file)
    const again = createSQLiteStore(reopened)
    assert.deepEqual(await again.listKeys(), [key('k-1', { state: 'current' })])
    assert.deepEqual(await again.getToken('t-1'), token('t-1', { description: 'kept' }))
    assert.deepEqual(await again.listDescendants('t-1'), [
      token('t-2', { parentJti: 't-1', revokedAt: T + 5 }),
    ])
    assert.deepEqual(await again.listRevoked(T), [{ jti: 't-2', expiresAt: T + 86_400 }])
    assert.deepEqual(schemaRows(reopened), ['store 1', 'store 2', 'store 3', 'store 4', 'store 5', 'store 6'])
    reopened.close()
  })

  it('refuses a database migrated by a newer Gatehouse, changing nothing', () => {
    const db = new DatabaseSync(file)
    db.exec(`CREATE TABLE gatehouse_schema (component TEXT NOT NULL, version INTEGER NOT NULL,
      applied_at INTEGER NOT NULL, PRIMARY KEY (component, version)) STRICT;
      INSERT INTO gatehouse_schema VALUES ('store', 1, 0), ('store', 99, 0)`)
    assert.throws(
      () => createSQLiteStore(db),
      (error: unknown) => error instanceof SchemaTooNewError && error.code === 'ERR_STORE_SCHEMA_TOO_NEW',
    )
    assert.deepEqual(objects(db), ['table gatehouse_schema'])
    assert.equal(db.isTransaction, false)
    db.close()
  })

  it('compare-and-set holds between two connections to one file', async () => {
    const dbA = new DatabaseSync(file)
    const dbB = new DatabaseSync(file)
    const a = createSQLiteStore(dbA)
    const b = createSQLiteStore(dbB)
    await a.insertKey(key('k-1', { state: 'next' }))
    assert.equal(await a.transitionKey('k-1', 'next', 'current'), true)
    assert.equal(await b.transitionKey('k-1', 'next', 'current'), false)
    assert.equal((await b.listKeys())[0]?.state, 'current')
    dbA.close()
    dbB.close()
  })

  it('revokes all or nothing: a failure part-way rolls back the tokens already revoked', async () => {
    const db = new DatabaseSync(file)
    const store = createSQLiteStore(db)
    await store.insertToken(token('a'))
    await store.insertToken(token('boom'))
    db.exec(`CREATE TRIGGER test_refuse BEFORE UPDATE OF revoked_at ON gh_tokens WHEN NEW.jti = 'boom'
      BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END`)
    await assert.rejects(store.revokeTokens(['a', 'boom'], T + 1), /refused by test trigger/)
    assert.equal(db.isTransaction, false)
    assert.equal((await store.getToken('a'))?.revokedAt, undefined)
    assert.deepEqual(await store.listRevoked(T), [])

    db.exec('DROP TRIGGER test_refuse')
    assert.equal(await store.revokeTokens(['a', 'boom'], T + 2), 2)
    db.close()
  })

  it('refuses something that is not a DatabaseSync at construction', () => {
    assert.throws(() => createSQLiteStore({} as DatabaseSync), {
      name: 'TypeError',
      message: 'db: expected a node:sqlite DatabaseSync, found Object',
    })
  })
})
