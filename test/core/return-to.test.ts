import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { safeReturnPath, safeReturnTo } from '../../src/core/return-to.ts'

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

const APPS = new Set(['https://wiki.example.com', 'https://grafana.example.com:8443'])

test('safeReturnTo: an absolute URL of an app origin is kept; every other form falls back', () => {
  assert.equal(safeReturnTo('https://wiki.example.com/a?b=1#c', APPS), 'https://wiki.example.com/a?b=1#c')
  assert.equal(safeReturnTo('https://WIKI.example.com', APPS), 'https://wiki.example.com/')
  assert.equal(safeReturnTo('https://grafana.example.com:8443/d', APPS), 'https://grafana.example.com:8443/d')
  assert.equal(safeReturnTo('/reports', APPS), '/reports')
  for (const hostile of [
    'https://evil.example/',
    'https://wiki.example.com.evil.example/',
    'https://wiki.example.com@evil.example/',
    'https://evil@wiki.example.com/',
    'https://wiki.example.com:444/',
    'http://wiki.example.com/',
    'https://grafana.example.com/',
    'https:/\\wiki.example.com/',
    'https:\\\\wiki.example.com/',
    'https://wiki.example.com\\@evil.example/',
    '//wiki.example.com/',
    'javascript://wiki.example.com/%0aalert(1)',
    'https://wiki.example.com/\nx',
    'https://wiki.example.com/ x',
    ' https://wiki.example.com/',
    `https://wiki.example.com/${'a'.repeat(2100)}`,
  ])
    assert.equal(safeReturnTo(hostile, APPS), '/', hostile)
  // Without origins it is safeReturnPath.
  assert.equal(safeReturnTo('https://wiki.example.com/', new Set()), '/')
})

test('safeReturnTo property: the result is a path of this origin or a URL of an allowed origin', () => {
  const piece = fc.constantFrom(
    'https://',
    'http://',
    '//',
    '/',
    '\\',
    '@',
    ':',
    '.',
    '%2f',
    '%5c',
    '?',
    '#',
    'wiki.example.com',
    'grafana.example.com:8443',
    'evil.example',
    'a',
    ' ',
    '\t',
    '%00',
  )
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 8 }), (parts) => {
      const out = safeReturnTo(parts.join(''), APPS)
      if (out.startsWith('/')) {
        assert.ok(!out.startsWith('//') && !out.startsWith('/\\'), out)
        assert.equal(new URL(out, 'https://self.example').origin, 'https://self.example', out)
      } else {
        assert.ok(APPS.has(new URL(out).origin), out)
        assert.ok(out.startsWith(`${new URL(out).origin}/`), out)
      }
    }),
    { numRuns: 3000 },
  )
})
