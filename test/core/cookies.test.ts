import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { readCookie, stripCookies } from '../../src/core/cookies.ts'

const own = (n: string) => n === 'gh' || n.startsWith('gh.') || n.startsWith('gh-state-')

test('stripCookies removes exactly our cookies, wherever they stand', () => {
  const cases: Array<[string, string | undefined]> = [
    ['gh=x', undefined],
    ['a=1; gh=x', 'a=1'],
    ['gh=x; a=1', 'a=1'],
    ['a=1; gh=x; b=2', 'a=1; b=2'],
    ['a=1;gh=x;b=2', 'a=1;b=2'],
    ['a=1; gh=x; gh.1=y; gh-state-abc=z; b=2', 'a=1; b=2'],
    ['xgh=1; ghost=2; a=gh', 'xgh=1; ghost=2; a=gh'],
    ['a=1; gh-other=2', 'a=1; gh-other=2'],
    ['gh=x; gh.1=y', undefined],
  ]
  for (const [input, expected] of cases) assert.equal(stripCookies(input, 'gh', own), expected, input)
  assert.equal(stripCookies(undefined, 'gh', own), undefined)
  assert.equal(stripCookies('a=1', 'gh', own), 'a=1')
})

test('property: no own cookie survives, every other cookie does, in order', () => {
  const name = fc.oneof(
    fc.constantFrom('gh', 'gh.1', 'gh-state-x', 'ghost', 'xgh', 'gh-other'),
    fc.stringMatching(/^[a-z]{1,6}$/),
  )
  const pair = fc.tuple(name, fc.stringMatching(/^[A-Za-z0-9=._-]{0,8}$/))
  fc.assert(
    fc.property(fc.array(pair, { minLength: 1, maxLength: 8 }), fc.constantFrom('; ', ';'), (pairs, sep) => {
      const header = pairs.map(([n, v]) => `${n}=${v}`).join(sep)
      const out = stripCookies(header, 'gh', own)
      const kept = pairs.filter(([n]) => !own(n)).map(([n, v]) => `${n}=${v}`)
      const got = out === undefined ? [] : out.split(';').map((p) => p.trim())
      assert.deepEqual(got, kept)
    }),
    { numRuns: 3000 },
  )
})

test('readCookie finds a cookie only at a cookie boundary', () => {
  assert.equal(readCookie('a=1; gh=x', 'gh'), 'x')
  assert.equal(readCookie('xgh=1; gh=2', 'gh'), '2')
  assert.equal(readCookie('a=gh=1', 'gh'), undefined)
  assert.equal(readCookie(undefined, 'gh'), undefined)
})
