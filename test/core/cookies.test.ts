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

test('a cookie after ", " (RFC 2965, or two Cookie fields joined by fetch) is read and stripped alike', () => {
  for (const header of ['a=1, gh=x', 'a=1,gh=x', 'gh=x, a=1', 'a=1, gh=x; b=2', 'a=1;\tgh=x']) {
    assert.equal(readCookie(header, 'gh'), 'x', header)
    const stripped = stripCookies(header, 'gh', own)
    assert.equal(readCookie(stripped, 'gh'), undefined, `${header} → ${stripped}`)
    assert.ok(!stripped?.includes('gh='), `${header} → ${stripped}`)
  }
  assert.equal(stripCookies('a=1, gh=x; b=2', 'gh', own), 'a=1, b=2')
  // A name after a space but no separator is part of another value, to both.
  assert.equal(readCookie('a=1 gh=x', 'gh'), undefined)
  assert.equal(stripCookies('a=1 gh=x', 'gh', own), 'a=1 gh=x')
})

test('property: whatever the separators, what readCookie finds stripCookies removes, and nothing else', () => {
  const name = fc.oneof(
    fc.constantFrom('gh', 'gh.1', 'gh-state-x', 'ghost', 'xgh', 'gh-other'),
    fc.stringMatching(/^[a-z]{1,6}$/),
  )
  const value = fc.stringMatching(/^[A-Za-z0-9._~-]{0,8}$/)
  const separator = fc.constantFrom('; ', ';', ', ', ',', ';\t', ' ; ')
  fc.assert(
    fc.property(fc.array(fc.tuple(name, value, separator), { minLength: 1, maxLength: 8 }), (pairs) => {
      const header = pairs.map(([n, v, sep], i) => (i === 0 ? '' : sep) + `${n}=${v}`).join('')
      const stripped = stripCookies(header, 'gh', own)
      for (const [n] of pairs) {
        if (own(n)) assert.equal(readCookie(stripped, n), undefined, `${header} → ${stripped}`)
        else
          assert.equal(
            readCookie(stripped, n)?.trim(),
            readCookie(header, n)?.trim(),
            `${header} → ${stripped}`,
          )
      }
      const ownRead = pairs.filter(([n]) => own(n) && readCookie(header, n) !== undefined)
      assert.equal(ownRead.length, pairs.filter(([n]) => own(n)).length, 'every own cookie is read')
    }),
    { numRuns: 3000 },
  )
})
