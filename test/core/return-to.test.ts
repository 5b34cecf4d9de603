import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { safeReturnPath } from '../../src/core/return-to.ts'

test('same-origin relative paths are kept', () => {
  for (const p of ['/', '/a', '/a/b?x=1&y=2', '/a#frag', '/caf%C3%A9', '/a/./b']) {
    assert.equal(
      safeReturnPath(p),
      new URL(p, 'http://x').pathname + new URL(p, 'http://x').search + new URL(p, 'http://x').hash,
    )
  }
})

test('every open-redirect form falls back', () => {
  const hostile = [
    '//evil.example',
    '///evil.example',
    '/\\evil.example',
    '\\\\evil.example',
    'https://evil.example',
    'http:evil.example',
    'javascript:alert(1)',
    '/%2F%2Fevil.example',
    '/%2f/evil.example',
    '/%5Cevil.example',
    '%2F%2Fevil.example',
    '/\t/evil.example',
    '/\n/evil.example',
    ' /a',
    '/a b',
    'evil.example',
    '',
    '/%E0%A4%A',
    '/' + 'a'.repeat(3000),
    '/\u0000',
    '/a\\b',
  ]
  for (const h of hostile) assert.equal(safeReturnPath(h), '/', JSON.stringify(h))
})

test('property: whatever comes in, the result is a same-origin path', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.webUrl(),
        fc.string().map((s) => '/' + s),
        fc.string().map((s) => '//' + s),
      ),
      (input) => {
        const out = safeReturnPath(input)
        assert.equal(out[0], '/')
        assert.notEqual(out[1], '/')
        assert.notEqual(out[1], '\\')
        assert.equal(new URL(out, 'https://app.example').origin, 'https://app.example')
        // Decoding once more must not turn it into another origin either.
        let decoded = out
        try {
          decoded = decodeURIComponent(out)
        } catch {}
        assert.equal(
          new URL(decoded.replace(/^\/+/, '/'), 'https://app.example').origin,
          'https://app.example',
        )
        assert.ok(!/^\/[\\/]/.test(decoded), `decoded ${JSON.stringify(decoded)}`)
      },
    ),
    { numRuns: 2000 },
  )
})

test('dot segments cannot make a path into //host: checked after resolving them', () => {
  for (const h of [
    '/.//evil.example',
    '/..//x',
    '/./..//x',
    '/a/..//evil.example',
    '/a/b/../..//evil.example/path',
    '/%2e//evil.example',
    '/%2E%2E//evil.example',
    '/.%2e//evil.example',
    '/.%2f/evil.example',
    '/%2e%2f/evil.example',
    '/.%5Cevil.example',
    '/..%2F%2Fevil.example',
  ])
    assert.equal(safeReturnPath(h), '/', JSON.stringify(h))
  assert.equal(safeReturnPath('/a/./b/../c?x=1#f'), '/a/c?x=1#f')
  assert.equal(safeReturnPath('/.//evil.example', '/home'), '/home', 'the fallback given')
})

test('property: paths of slashes, dots and their encodings always resolve on the same origin, twice', () => {
  const piece = fc.constantFrom(
    '/',
    '\\',
    '.',
    '%2e',
    '%2E',
    '%2f',
    '%2F',
    '%5c',
    '%5C',
    '\t',
    'a',
    'evil',
    '?',
    '#',
  )
  const candidate = fc.oneof(
    fc.array(piece, { maxLength: 12 }).map((p) => p.join('')),
    fc.array(piece, { maxLength: 12 }).map((p) => '/' + p.join('')),
  )
  const origin = 'https://gate.example'
  fc.assert(
    fc.property(candidate, (input) => {
      const out = safeReturnPath(input)
      const first = new URL(out, origin)
      assert.equal(first.origin, origin, `${JSON.stringify(input)} → ${out}`)
      // A browser resolving the Location it was given, then the path it landed on (a second redirect hop).
      const landed = first.pathname + first.search + first.hash
      assert.equal(landed, out, `${JSON.stringify(input)} → ${out} moves when resolved again`)
      assert.equal(new URL(landed, first.href).origin, origin)
      assert.ok(/^\/(?![/\\])/.test(out), `${JSON.stringify(input)} → ${out}`)
      assert.equal(safeReturnPath(out), out, 'idempotent')
    }),
    { numRuns: 5000 },
  )
})
