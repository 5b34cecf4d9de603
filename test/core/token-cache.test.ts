import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createTokenCache } from '../../src/core/token-cache.ts'

const tail = 'S'.repeat(32)

test('a hit needs the whole token, not only its tail', () => {
  const cache = createTokenCache<string>(10)
  cache.set(`victim.${tail}`, 'victim')
  assert.equal(cache.get(`victim.${tail}`), 'victim')
  assert.equal(cache.get(`forged.${tail}`), undefined, 'same signature tail, other token')
  cache.delete(`forged.${tail}`)
  assert.equal(
    cache.get(`victim.${tail}`),
    'victim',
    'deleting another token with the same tail does nothing',
  )
  cache.delete(`victim.${tail}`)
  assert.equal(cache.get(`victim.${tail}`), undefined)
})

test('bounded: the oldest entry goes first', () => {
  const cache = createTokenCache<number>(3)
  for (let i = 0; i < 5; i++) cache.set(`token-${i}-${'x'.repeat(40)}${i}`, i)
  assert.equal(cache.size, 3)
  assert.equal(cache.get(`token-0-${'x'.repeat(40)}0`), undefined)
  assert.equal(cache.get(`token-4-${'x'.repeat(40)}4`), 4)
  assert.throws(() => createTokenCache(0), TypeError)
})

test('bounded in memory too: the characters held never pass maxBytes, however long the tokens', () => {
  const cache = createTokenCache<number>(1000, { maxBytes: 10_000 })
  for (let i = 0; i < 200; i++) cache.set(`${'t'.repeat(3000)}-${i}-${'x'.repeat(32)}${i}`, i)
  assert.ok(cache.bytes <= 10_000, `holds ${cache.bytes} characters`)
  assert.equal(cache.size, 3)
  assert.equal(cache.get(`${'t'.repeat(3000)}-199-${'x'.repeat(32)}199`), 199, 'the newest stays')
  cache.set('y'.repeat(20_000), 1)
  assert.equal(cache.get('y'.repeat(20_000)), undefined, 'a token larger than the whole budget is not kept')
  assert.equal(cache.size, 3)
  cache.delete(`${'t'.repeat(3000)}-199-${'x'.repeat(32)}199`)
  assert.equal(cache.size, 2)
  assert.equal(cache.bytes, 2 * (3000 + '-19X-'.length + 32 + 3))
})

test('replacing an entry does not count its token twice', () => {
  const cache = createTokenCache<number>(10, { maxBytes: 1000 })
  const token = `${'a'.repeat(100)}${'z'.repeat(32)}`
  for (let i = 0; i < 50; i++) cache.set(token, i)
  assert.equal(cache.size, 1)
  assert.equal(cache.bytes, token.length)
  assert.equal(cache.get(token), 49)
})
