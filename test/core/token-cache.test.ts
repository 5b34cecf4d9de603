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
