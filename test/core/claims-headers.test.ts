/**
 * identity.headers_from_claims (Gatehouse 10, item 3): the configured claims of a verified token become
 * headers for the upstream, as text a header can carry, kept in the session cookie (only those), and a
 * client's copy of such a header is named for every adapter to drop.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { configSchema } from '../../src/config/schema.ts'
import {
  CLAIM_HEADER_MAX_BYTES,
  claimsForHeaders,
  createIdentityHeaders,
  identityFromClaims,
} from '../../src/core/identity.ts'
import { API, cookieHeaderFrom, facts, setup, signIn } from './fixtures.ts'

const CLAIM_HEADERS: Array<[string, string]> = [
  ['x-user-department', 'department'],
  ['x-user-teams', 'teams'],
  ['x-user-level', 'level'],
  ['x-user-verified', 'email_verified'],
  ['x-user-address', 'address'],
  ['x-user-note', 'note'],
  ['x-user-long', 'long'],
]

function recordingLog() {
  const lines: Array<{ level: string; obj: Record<string, unknown> }> = []
  const at = (level: string) => (obj: object) => lines.push({ level, obj: obj as Record<string, unknown> })
  return { lines, log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } }
}

describe('claims as header text', () => {
  test('a string, an array, a number and a boolean pass; an object is skipped with one debug line', () => {
    const { lines, log } = recordingLog()
    const out = claimsForHeaders(
      {
        department: 'R&D',
        teams: ['web', 'api', 7, true],
        level: 3,
        email_verified: false,
        address: { street: 'Main' },
        unconfigured: 'not asked for',
      },
      CLAIM_HEADERS,
      log,
    )
    assert.deepEqual(out, { department: 'R&D', teams: 'web,api,7,true', level: '3', email_verified: 'false' })
    assert.deepEqual(lines, [
      { level: 'debug', obj: { code: 'claim_not_passed', claim: 'address', reason: 'object' } },
    ])
  })

  test('an array holding an object, null, NaN, an empty string or array: skipped', () => {
    const { lines, log } = recordingLog()
    const out = claimsForHeaders(
      { teams: ['a', { b: 1 }], department: null, level: Number.NaN, note: '', email_verified: [] },
      CLAIM_HEADERS,
      log,
    )
    assert.equal(out, undefined)
    assert.deepEqual(
      lines.map((l) => [l.obj['claim'], l.obj['reason']]),
      [
        ['teams', 'array of non-scalars'],
        ['level', 'number'],
      ],
    )
  })

  test('CR, LF and other control characters are removed: no header can be split or added', () => {
    const out = claimsForHeaders({ note: 'ops\r\nX-Auth-Request-User: root\u0000\u007f\t' }, CLAIM_HEADERS)
    assert.deepEqual(out, { note: 'opsX-Auth-Request-User: root' })
  })

  test(`a long value is cut at ${CLAIM_HEADER_MAX_BYTES} bytes, never inside a UTF-8 character`, () => {
    const ascii = claimsForHeaders({ long: 'x'.repeat(5000) }, CLAIM_HEADERS)!
    assert.equal(ascii['long'], 'x'.repeat(CLAIM_HEADER_MAX_BYTES))
    // 'é' is two bytes: 1023 ASCII bytes then é would end past the cap, so the é goes.
    const cut = claimsForHeaders({ long: `${'x'.repeat(1023)}é` }, CLAIM_HEADERS)!
    assert.equal(cut['long'], 'x'.repeat(1023))
  })

  test('characters past ASCII go as their UTF-8 bytes (what an upstream decoding UTF-8 reads back)', () => {
    const out = claimsForHeaders({ department: 'Forschung & Entwicklung, Zürich 山' }, CLAIM_HEADERS)!
    const value = out['department']!
    assert.match(value, /^[\x20-\xff]+$/, 'only byte-sized characters: no HTTP stack refuses it')
    const bytes = Uint8Array.from(value, (c) => c.charCodeAt(0))
    assert.equal(new TextDecoder().decode(bytes), 'Forschung & Entwicklung, Zürich 山')
  })

  test("claim names that are Object.prototype's (constructor, __proto__) are plain claims", () => {
    const pairs: Array<[string, string]> = [
      ['x-a', 'constructor'],
      ['x-b', '__proto__'],
      ['x-c', 'toString'],
    ]
    assert.equal(claimsForHeaders({}, pairs), undefined, 'absent, not the prototype property')
    const out = claimsForHeaders(JSON.parse('{"constructor":"c","__proto__":"p"}'), pairs)!
    const own = JSON.parse('{"constructor":"c","__proto__":"p"}')
    assert.deepEqual(out, own)
    assert.deepEqual(JSON.parse(JSON.stringify(out)), own, 'and so in the session cookie')
    const headersOf = createIdentityHeaders(pairs)
    // As read back from a session cookie: a plain object without them.
    const h = headersOf({ sub: 'u', user: 'u', groups: [], claims: JSON.parse('{"other":"x"}') })
    assert.deepEqual(h, { 'x-auth-request-user': 'u' })
    const withThem = headersOf({ sub: 'u', user: 'u', groups: [], claims: out })
    assert.equal(withThem['x-a'], 'c')
    assert.equal(withThem['x-b'], 'p')
  })

  test('identityFromClaims keeps only the configured claims; none configured, none kept', () => {
    const claims = { sub: 'u1', department: 'R&D', secret_stuff: 'x', teams: ['a'] }
    const mapping = { userClaim: 'sub', groupsClaim: 'groups' }
    assert.deepEqual(identityFromClaims(claims, { ...mapping, claimHeaders: CLAIM_HEADERS })!.claims, {
      department: 'R&D',
      teams: 'a',
    })
    assert.equal(identityFromClaims(claims, mapping)!.claims, undefined)
  })

  test('the headers are computed once per identity object, with the claim headers after the fixed ones', () => {
    const headersOf = createIdentityHeaders(CLAIM_HEADERS)
    const identity = identityFromClaims(
      { sub: 'u1', email: 'u1@example.com', department: 'R&D', level: 2 },
      { userClaim: 'sub', groupsClaim: 'groups', claimHeaders: CLAIM_HEADERS },
    )!
    const h = headersOf(identity)
    assert.equal(headersOf(identity), h, 'the same frozen object again')
    assert.ok(Object.isFrozen(h))
    assert.deepEqual(h, {
      'x-auth-request-user': 'u1',
      'x-auth-request-email': 'u1@example.com',
      'x-user-department': 'R&D',
      'x-user-level': '2',
    })
  })
})

describe('claim headers through the decision core', () => {
  const claimHeaders = CLAIM_HEADERS

  test('a browser session carries the configured claims in its cookie, and only those', async () => {
    const g = await setup({
      mapping: { userClaim: 'sub', groupsClaim: 'groups', claimHeaders },
    })
    g.provider.state.claims = {
      ...g.provider.state.claims,
      department: 'R&D',
      teams: ['web', 'api'],
      level: 4,
      address: { street: 'Main' },
      huge_unconfigured_claim: 'y'.repeat(3000),
    }
    const { cookie } = await signIn(g)
    const read = await g.codec.read(cookie)
    assert.ok(read.ok)
    assert.deepEqual(read.session.identity.claims, { department: 'R&D', teams: 'web,api', level: '4' })
    assert.ok(cookie.length < 2500, 'the unconfigured 3 KB claim is not in the cookie')
    // A new process (nothing cached) reads the same claims back from the cookie.
    g.codec.forget(read.token)
    const again = await g.codec.read(cookie)
    assert.ok(again.ok)
    assert.deepEqual(again.session.identity.claims, read.session.identity.claims)

    const d = await g.gatehouse.handle(facts('/dashboard', { headers: { ...API, cookie } }))
    assert.equal(d.kind, 'allow')
    assert.equal(d.upstreamHeaders['x-user-department'], 'R&D')
    assert.equal(d.upstreamHeaders['x-user-teams'], 'web,api')
    assert.equal(d.upstreamHeaders['x-user-level'], '4')
    assert.equal(d.upstreamHeaders['x-user-address'], undefined)
    assert.deepEqual([...d.dropFromClient!].sort(), claimHeaders.map(([h]) => h).sort())
    assert.ok(
      g.logs.some((l) => (l.obj as { code?: string }).code === 'claim_not_passed'),
      'the object claim was logged',
    )
  })

  test('no claim headers configured: nothing more to drop, the cookie carries no claims', async () => {
    const g = await setup()
    g.provider.state.claims = { ...g.provider.state.claims, department: 'R&D' }
    const { cookie } = await signIn(g)
    const read = await g.codec.read(cookie)
    assert.ok(read.ok)
    assert.equal(read.session.identity.claims, undefined)
    const d = await g.gatehouse.handle(facts('/dashboard', { headers: { ...API, cookie } }))
    assert.equal(d.kind, 'allow')
    assert.equal(d.dropFromClient, undefined)
  })

  test('forward-auth answers every claim header, empty when the identity has none of it', async () => {
    const g = await setup({ mapping: { userClaim: 'sub', groupsClaim: 'groups', claimHeaders } })
    g.provider.state.claims = { ...g.provider.state.claims, department: 'R&D' }
    const { cookie } = await signIn(g)
    const ok = await g.gatehouse.handle(
      facts('/oauth2/auth', { headers: { ...API, cookie, 'x-forwarded-uri': '/dashboard' } }),
    )
    assert.ok(ok.kind === 'respond' && ok.status === 202)
    assert.equal(ok.headers['x-user-department'], 'R&D')
    assert.equal(ok.headers['x-user-teams'], '')
    const anonymous = await g.gatehouse.handle(
      facts('/oauth2/auth', { headers: { ...API, 'x-forwarded-uri': '/public/x' } }),
    )
    assert.ok(anonymous.kind === 'respond' && anonymous.status === 202)
    for (const [header] of claimHeaders) assert.equal(anonymous.headers[header], '', header)
  })

  test('a session cookie whose claims are not all strings is refused as malformed', async () => {
    const g = await setup({ mapping: { userClaim: 'sub', groupsClaim: 'groups', claimHeaders } })
    const now = Math.floor(g.clock.now() / 1000)
    const set = await g.codec.write({
      sid: 's1',
      identity: { sub: 'u', user: 'u', groups: [], claims: { department: 5 as unknown as string } },
      signedInAt: now,
      expiresAt: now + 600,
      maxExpiresAt: now + 3600,
    })
    const cookie = cookieHeaderFrom(set)
    g.codec.forget(cookie.slice(cookie.indexOf('=') + 1))
    const read = await g.codec.read(cookie)
    assert.deepEqual(read, { ok: false, reason: 'malformed', repeats: 0 })
  })
})

describe('identity.headers_from_claims in the config', () => {
  const base = {
    public_url: 'https://app.example.com',
    upstream: 'http://127.0.0.1:3000',
    provider: { issuer: 'https://idp.example.com', client_id: 'c' },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: {
      session: { ttl: '12h', max_ttl: '7d' },
      refresh: { ttl: '7d', max_ttl: '7d' },
      api_token: { ttl: '30d', max_ttl: '90d' },
      derived_token: { ttl: '1h', max_ttl: '1d' },
      signing_key: { ttl: '30d', max_ttl: '180d' },
    },
  }
  const parse = (headers_from_claims: Record<string, string>) =>
    configSchema.safeParse({ ...base, identity: { headers_from_claims } })

  test('default: none', () => {
    const r = configSchema.safeParse(base)
    assert.ok(r.success)
    assert.deepEqual(r.data.identity.headers_from_claims, {})
  })

  test('a header name per claim is accepted', () => {
    const r = parse({ 'X-User-Department': 'department', 'Remote-Groups': 'groups' })
    assert.ok(r.success, JSON.stringify(r.error?.issues))
  })

  for (const [name, why] of [
    ['X-Auth-Request-Department', /Gatehouse sets itself/],
    ['X-Gatehouse-Assertion', /Gatehouse sets itself/],
    ['X-Forwarded-User', /Gatehouse sets itself/],
    ['X_User_Department', /no _ or spaces/],
    ['X User', /no _ or spaces/],
    ['X-User:', /no _ or spaces/],
    ['Connection', /cannot carry a claim/],
    ['Host', /cannot carry a claim/],
    ['Authorization', /cannot carry a claim/],
    ['cookie', /cannot carry a claim/],
  ] as const) {
    test(`${name} is refused`, () => {
      const r = parse({ [name]: 'department' })
      assert.equal(r.success, false)
      const issue = r.error!.issues[0]!
      assert.deepEqual(issue.path.slice(0, 2), ['identity', 'headers_from_claims'])
      assert.match(issue.message, why)
    })
  }

  test('the same header twice in another case is refused', () => {
    const r = parse({ 'X-Dept': 'department', 'x-dept': 'dept' })
    assert.equal(r.success, false)
    assert.match(r.error!.issues[0]!.message, /named twice/)
  })
})
