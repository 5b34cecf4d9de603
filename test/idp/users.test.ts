import assert from 'node:assert/strict'
import { DatabaseSync } from 'node:sqlite'
import { describe, it } from 'node:test'

import {
  IdPError,
  InvalidPasswordError,
  InvalidUserAttributeError,
  InvalidUsernameError,
  UserExistsError,
} from '../../src/idp/errors.ts'
import { createUserStore, type UserStoreOptions } from '../../src/idp/users.ts'

// Cheap scrypt: cost is a parameter here, not the behaviour under test.
const FAST = { N: 2 ** 10, r: 8, p: 1 }
const NOW = Date.UTC(2026, 0, 2, 3, 4, 5)

function store(db = new DatabaseSync(':memory:'), options: UserStoreOptions = {}) {
  return createUserStore(db, { scrypt: FAST, now: () => NOW, ...options })
}

function rawHash(db: DatabaseSync, username: string): string {
  const row = db.prepare('SELECT password_hash FROM idp_users WHERE username = ?').get(username) as
    | { password_hash: string }
    | undefined
  assert.ok(row, `no row for ${username}`)
  return row.password_hash
}

describe('createUserStore', () => {
  it('adds a user with a random sub, its attributes and the creation time', async () => {
    const users = store()
    const alice = await users.add('alice', 'correct horse', {
      email: 'alice@example.com',
      name: 'Alice Example',
      groups: ['admins', 'staff', 'admins'],
    })
    assert.match(alice.sub, /^[0-9a-f-]{36}$/)
    assert.notEqual(alice.sub, 'alice')
    assert.deepEqual(
      { ...alice, groups: [...alice.groups] },
      {
        sub: alice.sub,
        username: 'alice',
        email: 'alice@example.com',
        emailVerified: false,
        name: 'Alice Example',
        groups: ['admins', 'staff'],
        createdAtMs: NOW,
      },
    )
    assert.deepEqual(users.find('alice'), alice)
    assert.deepEqual(users.findById(alice.sub), alice)
    const bob = await users.add('bob', 'correct horse')
    assert.notEqual(bob.sub, alice.sub)
    assert.equal(bob.email, undefined)
    assert.deepEqual(bob.groups, [])
  })

  it('verifies the right password and refuses a wrong one or an unknown user', async () => {
    const users = store()
    const alice = await users.add('alice', 'correct horse', { emailVerified: true, email: 'a@example.com' })
    assert.deepEqual(await users.verify('alice', 'correct horse'), alice)
    assert.equal(await users.verify('alice', 'correct horse!'), null)
    assert.equal(await users.verify('alice', ''), null)
    assert.equal(await users.verify('mallory', 'correct horse'), null)
    assert.equal(await users.verify('not a valid name', 'correct horse'), null)
    assert.equal(await users.verify('alice', 'x'.repeat(5000)), null)
  })

  it('treats usernames case-insensitively', async () => {
    const users = store()
    const alice = await users.add('Alice', 'correct horse')
    assert.deepEqual(await users.verify('alice', 'correct horse'), alice)
    assert.equal(users.find('ALICE')?.sub, alice.sub)
    await assert.rejects(users.add('alice', 'another password'), { code: 'ERR_USER_EXISTS' })
  })

  it('refuses a duplicate username with ERR_USER_EXISTS and keeps the first user', async () => {
    const users = store()
    const first = await users.add('alice', 'correct horse')
    await assert.rejects(users.add('alice', 'different password'), (error: unknown) => {
      assert.ok(error instanceof UserExistsError)
      assert.ok(error instanceof IdPError)
      assert.equal(error.code, 'ERR_USER_EXISTS')
      assert.equal(UserExistsError.code, 'ERR_USER_EXISTS')
      return true
    })
    assert.deepEqual(await users.verify('alice', 'correct horse'), first)
    assert.equal(await users.verify('alice', 'different password'), null)
  })

  it('refuses bad usernames with ERR_INVALID_USERNAME', async () => {
    const users = store()
    for (const bad of ['', 'a b', 'x'.repeat(65), 'émile', 'a/b', 'a:b', 'tab\t', '<script>']) {
      await assert.rejects(
        users.add(bad, 'correct horse'),
        InvalidUsernameError,
        `accepted ${JSON.stringify(bad)}`,
      )
    }
    for (const good of ['a', 'x'.repeat(64), 'first.last_name@example-corp.com', '0-9']) {
      assert.equal((await users.add(good, 'correct horse')).username, good)
    }
    assert.equal(users.list().length, 4)
  })

  it('refuses bad passwords and attributes with their codes', async () => {
    const users = store()
    await assert.rejects(users.add('alice', 'short'), { code: 'ERR_INVALID_PASSWORD' })
    await assert.rejects(users.add('alice', 'x'.repeat(1025)), InvalidPasswordError)
    await assert.rejects(
      users.add('alice', 'correct horse', { email: 'not-an-email' }),
      InvalidUserAttributeError,
    )
    await assert.rejects(users.add('alice', 'correct horse', { groups: ['has space'] }), {
      code: 'ERR_INVALID_USER_ATTRIBUTE',
    })
    await assert.rejects(users.add('alice', 'correct horse', { groups: ['a,b'] }), InvalidUserAttributeError)
    await assert.rejects(
      users.add('alice', 'correct horse', { name: 'line\nbreak' }),
      InvalidUserAttributeError,
    )
    assert.deepEqual(users.list(), [])
  })

  it('stores a salted scrypt hash with its parameters, never the password', async () => {
    const db = new DatabaseSync(':memory:')
    const users = store(db)
    await users.add('alice', 'correct horse')
    await users.add('bob', 'correct horse')
    const hash = rawHash(db, 'alice')
    assert.match(hash, /^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/)
    assert.ok(!hash.includes('correct horse'))
    assert.notEqual(hash, rawHash(db, 'bob'), 'same password, different salt')
  })

  it('lists users without any hash', async () => {
    const users = store()
    await users.add('carol', 'correct horse', { groups: ['staff'] })
    await users.add('alice', 'correct horse')
    const list = users.list()
    assert.deepEqual(
      list.map((user) => user.username),
      ['alice', 'carol'],
    )
    const serialised = JSON.stringify(list)
    assert.ok(!serialised.includes('$scrypt'))
    assert.ok(!serialised.includes('hash'))
    for (const user of list) {
      assert.deepEqual(Object.keys(user).sort(), [
        'createdAtMs',
        'emailVerified',
        'groups',
        'sub',
        'username',
      ])
    }
  })

  it('removes a user, after which it neither verifies nor is found', async () => {
    const users = store()
    const alice = await users.add('alice', 'correct horse')
    assert.equal(users.remove('alice'), true)
    assert.equal(users.remove('alice'), false)
    assert.equal(users.remove('bad name'), false)
    assert.equal(users.find('alice'), undefined)
    assert.equal(users.findById(alice.sub), undefined)
    assert.equal(await users.verify('alice', 'correct horse'), null)
    const again = await users.add('alice', 'correct horse')
    assert.notEqual(again.sub, alice.sub, 'a new user is a new subject')
  })

  it('creates its table idempotently: a second store on the same database sees the users', async () => {
    const db = new DatabaseSync(':memory:')
    const alice = await store(db).add('alice', 'correct horse')
    const reopened = store(db)
    assert.deepEqual(reopened.find('alice'), alice)
    assert.deepEqual(await reopened.verify('alice', 'correct horse'), alice)
  })

  it('re-hashes with the current parameters on the next successful sign-in', async () => {
    const db = new DatabaseSync(':memory:')
    await store(db).add('alice', 'correct horse')
    assert.match(rawHash(db, 'alice'), /^\$scrypt\$ln=10,/)
    const stronger = store(db, { scrypt: { N: 2 ** 11, r: 8, p: 1 } })
    assert.equal(await stronger.verify('alice', 'wrong password'), null)
    assert.match(rawHash(db, 'alice'), /^\$scrypt\$ln=10,/, 'a failed attempt changes nothing')
    assert.ok(await stronger.verify('alice', 'correct horse'))
    assert.match(rawHash(db, 'alice'), /^\$scrypt\$ln=11,/)
    assert.ok(await store(db).verify('alice', 'correct horse'), 'the stored parameters are the ones used')
  })

  it('rejects impossible scrypt parameters at construction', () => {
    const db = new DatabaseSync(':memory:')
    assert.throws(() => createUserStore(db, { scrypt: { N: 1000, r: 8, p: 1 } }), TypeError)
    assert.throws(() => createUserStore(db, { scrypt: { N: 1024, r: 0, p: 1 } }), TypeError)
  })
})
