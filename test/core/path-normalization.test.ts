/**
 * Path normalisation (Gatehouse 8, item 1): the forms of a request target that an upstream reads as
 * another path than the policy judged are refused or matched as that path, and what is forwarded is
 * what was judged. Unit tests of `normalizePath`, `matchingPath` and the route matcher, and property
 * tests over generated hostile paths.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { compileRoutePolicy, matchingPath, normalizePath } from '../../src/core/route-policy.ts'
import { API, facts, setup } from './fixtures.ts'

const ADMINS = { kind: 'restricted', groups: ['admins'], emails: [] } as const

describe('normalizePath refuses what upstreams disagree on', () => {
  test('a fragment anywhere in the target', () => {
    for (const p of ['/admin#x', '/admin#', '/a/b?q=1#x', '/#/admin', '/%61dmin#x', '/public/..#/admin'])
      assert.equal(normalizePath(p), undefined, p)
  })

  test('dot segments with path parameters, encoded spaces, or of three dots', () => {
    for (const p of [
      '/public/..;/admin',
      '/public/..;x=1/admin',
      '/public/.;/admin',
      '/public/%2e%2e;/admin',
      '/public/.%2E;jsessionid=1/admin',
      '/public/..%20/admin',
      '/public/.%20./admin',
      '/public/.../admin',
      '/public/....',
      '/public/..;',
    ])
      assert.equal(normalizePath(p), undefined, p)
  })

  test('double encoding, encoded semicolons and control characters, malformed and overlong escapes', () => {
    for (const p of [
      '/%2561dmin',
      '/%252e%252e/admin',
      '/%252F',
      '/%25%32%46', // becomes %252F once the unreserved escapes are decoded
      '/admin%3Bx',
      '/admin%3b',
      '/a%0Ab',
      '/a%0d%0aSet-Cookie:x',
      '/a%09',
      '/a%7F',
      '/a%zz',
      '/a%',
      '/a%4',
      '/%2%61', // a bare % that decoding its neighbour would complete into %2a (found by the property below)
      '/%%34%31',
      '/%C0%AE%C0%AE/admin',
      '/public/%C0%AE%C0%AE/admin',
      '/%E0%80%AE',
      '/%C0%AF',
      '/%ED%A0%80',
      '/%FF',
    ])
      assert.equal(normalizePath(p), undefined, p)
  })

  test('look-alikes of / \\ and . that NFKC or best-fit mapping turn into the real ones, raw or escaped', () => {
    for (const p of [
      '/admin%EF%BC%8Fx',
      '/admin%ef%bc%8fx',
      '/admin\uFF0Fx',
      '/public/\uFF0E\uFF0E/admin',
      '/public%EF%BC%BC..%EF%BC%BCadmin',
      '/a\u2215b',
      '/a\u2216b',
      '/a\u2044b',
      '/a\u29F8b',
      '/a\uFE68b',
      '/a\u2024\u2024/b',
    ])
      assert.equal(normalizePath(p), undefined, p)
    // Other characters past ASCII are fine.
    assert.equal(normalizePath('/caf\u00e9/\u65e5\u672c')?.pathname, '/caf%C3%A9/%E6%97%A5%E6%9C%AC')
  })

  test('raw spaces and control characters', () => {
    for (const p of ['/a b', '/a\tb', '/a\u0000', '/a\u007f']) assert.equal(normalizePath(p), undefined, p)
  })

  test('still accepted: a lone %25, valid UTF-8, parameters and dots inside names', () => {
    const cases: Array<[string, string]> = [
      ['/100%25', '/100%25'],
      ['/a%25zz', '/a%25zz'],
      ['/caf%C3%A9', '/caf%C3%A9'],
      ['/caf%c3%a9', '/caf%C3%A9'],
      ['/a;jsessionid=1/b', '/a;jsessionid=1/b'],
      ['/v1.2/app.min.js', '/v1.2/app.min.js'],
      ['/.well-known/x', '/.well-known/x'],
      ['/a/../b/./c', '/b/c'],
      ['/%61dmin', '/admin'],
      ['/a\\..\\b', '/b'],
      ['/..//evil.example/x', '/evil.example/x'],
    ]
    for (const [input, pathname] of cases) assert.equal(normalizePath(input)?.pathname, pathname, input)
  })
})

describe('rules cannot be dodged by forms an upstream serves as the same path', () => {
  const match = compileRoutePolicy(
    [
      { path: '/admin', access: ADMINS },
      { path: '/secret/*', access: ADMINS },
      { path: '*', access: { kind: 'anonymous' } },
    ],
    { kind: 'anonymous' },
  )
  const judged = (raw: string) => {
    const n = normalizePath(raw)
    assert.ok(n !== undefined, raw)
    return match('GET', n.pathname).access.kind
  }

  test('path parameters, trailing dots, encoded spaces, repeated and trailing slashes', () => {
    for (const p of [
      '/admin',
      '/admin;x',
      '/admin;jsessionid=abc',
      '/admin.',
      '/admin..',
      '/admin./',
      '/admin%20',
      '/admin/',
      '/admin//',
      '//admin',
      '/;x/admin',
      '/secret;x/y',
      '/secret./y',
      '/secret//y',
      '/secret/y;x',
      '/%73ecret/y',
    ]) {
      if (normalizePath(p) === undefined) continue
      assert.equal(judged(p), 'restricted', p)
    }
    assert.equal(judged('/administrator'), 'anonymous')
    assert.equal(judged('/admin/x'), 'anonymous', 'an exact rule is not a prefix')
    assert.equal(judged('/secretx'), 'anonymous')
  })

  test('matchingPath', () => {
    const cases: Array<[string, string]> = [
      ['/admin;x', '/admin'],
      ['/admin.', '/admin'],
      ['/admin./', '/admin/'],
      ['/admin%20', '/admin'],
      ['/a;b/c;d', '/a/c'],
      ['/admin//x', '/admin/x'],
      ['/;x/admin', '/admin'],
      ['/app.js', '/app.js'],
      ['/', '/'],
      ['//', '/'],
    ]
    for (const [input, expected] of cases) assert.equal(matchingPath(input), expected, input)
  })

  test('case_insensitive: off by default, and when on /ADMIN matches the rule for /admin', () => {
    const sensitive = compileRoutePolicy([{ path: '/admin/*', access: ADMINS }], { kind: 'anonymous' })
    assert.equal(sensitive('GET', '/ADMIN/x').access.kind, 'anonymous')
    const insensitive = compileRoutePolicy([{ path: '/Admin/*', access: ADMINS, caseInsensitive: true }], {
      kind: 'anonymous',
    })
    for (const p of ['/admin', '/ADMIN', '/aDmIn/x', '/ADMIN;x/y', '/ADMIN./'])
      assert.equal(insensitive('GET', p).access.kind, 'restricted', p)
    const exact = compileRoutePolicy([{ path: '/admin', access: ADMINS, caseInsensitive: true }], {
      kind: 'anonymous',
    })
    assert.equal(exact('GET', '/ADMIN').access.kind, 'restricted')
    assert.equal(exact('GET', '/ADMIN/').access.kind, 'restricted')
  })
})

// ---- properties -----------------------------------------------------------------------------------

const piece = fc.constantFrom(
  '/',
  '//',
  '\\',
  '.',
  '..',
  ';',
  ';x=1',
  '#',
  '?',
  '&',
  '=',
  '%',
  '%2e',
  '%2E',
  '%25',
  '%2f',
  '%5c',
  '%3b',
  '%20',
  '%61',
  '%41',
  '%64',
  '%C0%AE',
  '%C0%AF',
  '%C3%A9',
  '%E2%80%AE',
  '2',
  'e',
  '61',
  'admin',
  'ADMIN',
  'dmin',
  'public',
  'a',
  'x',
  '~',
  '-',
)
const generatedPath = fc.array(piece, { maxLength: 14 }).map((parts) => '/' + parts.join(''))

function dotLike(segment: string): boolean {
  const name = segment.split(';')[0]!
  return /^(?:\.|%20)+$/.test(name) && name.includes('.')
}

/**
 * How a lenient upstream could read a forwarded path: decoding once or twice (overlong UTF-8 as the
 * ASCII it means), `\` as `/`, path parameters cut, trailing spaces and dots trimmed, dot segments
 * resolved, repeated slashes merged, case folded.
 */
function lenientUpstream(path: string, decodeTimes: number): string {
  let p = path.split('?')[0]!.split('#')[0]!
  for (let i = 0; i < decodeTimes; i++) {
    p = p
      .replace(/%C0%AE/gi, '.')
      .replace(/%C0%AF/gi, '/')
      .replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)))
  }
  p = p.replace(/\\/g, '/')
  const out: string[] = []
  for (const raw of p.split('/')) {
    const segment = raw.split(';')[0]!.replace(/ +$/, '')
    if (segment === '.' || segment === '') continue
    if (segment === '..') out.pop()
    else out.push(segment.replace(/[. ]+$/, ''))
  }
  return ('/' + out.filter((s) => s !== '').join('/')).toLowerCase()
}

describe('properties of normalised paths', () => {
  test('a path that normalises has no fragment, no dot-like segment, and normalises to itself', () => {
    fc.assert(
      fc.property(generatedPath, (raw) => {
        const n = normalizePath(raw)
        if (n === undefined) return
        const forwarded = n.pathname + n.search
        assert.ok(!forwarded.includes('#'), forwarded)
        for (const segment of n.pathname.split('/')) assert.ok(!dotLike(segment), `${raw} → ${forwarded}`)
        assert.ok(!/%25[0-9A-Fa-f]{2}/.test(n.pathname), `${raw} → ${forwarded}`)
        assert.deepEqual(normalizePath(forwarded), n, `${raw} → ${forwarded} is not idempotent`)
        // The path decodes (no malformed or non-UTF-8 escape is left).
        decodeURIComponent(n.pathname)
      }),
      { numRuns: 5000 },
    )
  })

  test('through the core: the forwarded path is the judged path, and no reading of it reaches a rule it dodged', async () => {
    const g = await setup({
      routes: [
        { path: '/admin/*', access: ADMINS, caseInsensitive: true },
        { path: '*', access: { kind: 'anonymous' } },
      ],
    })
    await fc.assert(
      fc.asyncProperty(generatedPath, async (raw) => {
        const d = await g.gatehouse.handle(facts(raw, { headers: API }))
        const n = normalizePath(raw)
        if (n === undefined) {
          assert.equal(d.kind === 'respond' && d.code, 'bad_path', raw)
          return
        }
        if (d.kind !== 'allow') {
          assert.equal(d.kind === 'respond' && d.status, 401, raw)
          return
        }
        assert.equal(d.path, n.pathname + n.search, 'the upstream gets the judged path')
        for (const times of [1, 2]) {
          const seen = lenientUpstream(d.path, times)
          assert.ok(
            seen !== '/admin' && !seen.startsWith('/admin/'),
            `${JSON.stringify(raw)} passed anonymously as ${d.path}, which an upstream reads as ${seen}`,
          )
        }
      }),
      { numRuns: 3000 },
    )
  })
})
