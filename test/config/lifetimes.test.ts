import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  capExpiry,
  detectExpiryCliff,
  effectiveLifetimes,
  formatLifetimeTable,
  type LifetimeConfig,
  signingKeyRetention,
  validateLifetimes,
} from '../../src/config/lifetimes.ts'

const HOUR = 3600
const DAY = 86_400
const NOW = 1_700_000_000

const cfg: LifetimeConfig = {
  session: { ttlSeconds: 12 * HOUR, maxTtlSeconds: 7 * DAY },
  refresh: { ttlSeconds: 1 * DAY, maxTtlSeconds: 30 * DAY },
  api_token: { ttlSeconds: 7 * DAY, maxTtlSeconds: 30 * DAY },
  derived_token: { ttlSeconds: 1 * HOUR, maxTtlSeconds: 90 * DAY },
  signing_key: { ttlSeconds: 30 * DAY, maxTtlSeconds: 90 * DAY },
}

test('a complete config validates with no problems', () => {
  assert.deepEqual(validateLifetimes(cfg), [])
})

test('a child max_ttl above its parent is not an error: the table reports it capped through the chain', () => {
  const rows = effectiveLifetimes(cfg)
  const derived = rows.find((r) => r.class === 'derived_token')
  assert.deepEqual(derived, {
    class: 'derived_token',
    ttlSeconds: HOUR,
    maxTtlSeconds: 90 * DAY,
    effectiveMaxSeconds: 30 * DAY,
    cappedBy: 'api_token',
    chain: ['derived_token', 'api_token'],
  })
  const refresh = rows.find((r) => r.class === 'refresh')
  assert.equal(refresh?.effectiveMaxSeconds, 7 * DAY)
  assert.equal(refresh?.cappedBy, 'session')
  const api = rows.find((r) => r.class === 'api_token')
  assert.equal(api?.effectiveMaxSeconds, 30 * DAY)
  assert.equal(api?.cappedBy, undefined)
  assert.ok(!('cappedBy' in api!), 'no cappedBy key when the own max_ttl holds')
  assert.deepEqual(api?.chain, ['api_token'])
})

test('a child at or below its parent max_ttl is not capped', () => {
  const rows = effectiveLifetimes({ ...cfg, derived_token: { ttlSeconds: HOUR, maxTtlSeconds: 30 * DAY } })
  const derived = rows.find((r) => r.class === 'derived_token')
  assert.equal(derived?.effectiveMaxSeconds, 30 * DAY)
  assert.equal(derived?.cappedBy, undefined)
})

test('a missing max_ttl fails validation, naming lifetimes.api_token.max_ttl', () => {
  const { maxTtlSeconds: _, ...onlyTtl } = cfg.api_token
  const problems = validateLifetimes({ ...cfg, api_token: onlyTtl })
  assert.deepEqual(problems, [
    {
      path: 'lifetimes.api_token.max_ttl',
      message: 'required: expected a positive integer (seconds), got nothing',
    },
  ])
})

test('validation: missing class, bad values, ttl above max_ttl, unknown class and key', () => {
  const { signing_key: _, ...noSigningKey } = cfg
  const problems = validateLifetimes({
    ...noSigningKey,
    session: { ttlSeconds: 0, maxTtlSeconds: '7d' },
    refresh: { ttlSeconds: 1.5, maxTtlSeconds: DAY },
    api_token: { ttlSeconds: 31 * DAY, maxTtlSeconds: 30 * DAY },
    derived_token: { ttlSeconds: HOUR, maxTtlSeconds: DAY, maxTtl: 90 * DAY },
    api_tokens: { ttlSeconds: HOUR, maxTtlSeconds: DAY },
  })
  assert.deepEqual(problems, [
    {
      path: 'lifetimes.api_tokens',
      message:
        'expected one of session, refresh, api_token, derived_token, signing_key, got an unknown class',
    },
    { path: 'lifetimes.session.ttl', message: 'expected a positive integer (seconds), got 0' },
    { path: 'lifetimes.session.max_ttl', message: 'expected a positive integer (seconds), got "7d"' },
    { path: 'lifetimes.refresh.ttl', message: 'expected a positive integer (seconds), got 1.5' },
    { path: 'lifetimes.api_token.ttl', message: 'expected at most max_ttl (30d), got 31d' },
    { path: 'lifetimes.derived_token.maxTtl', message: 'expected only ttl and max_ttl, got an unknown key' },
    { path: 'lifetimes.signing_key', message: 'required: expected { ttl, max_ttl }, got nothing' },
  ])
  assert.deepEqual(validateLifetimes(null), [
    { path: 'lifetimes', message: 'expected an object with one entry per credential class, got null' },
  ])
})

test('capExpiry: no cap when the request is within both limits', () => {
  const r = capExpiry({
    requestedExpiresAt: NOW + HOUR,
    classMaxExpiresAt: NOW + DAY,
    parent: { id: 'tok_parent', expiresAt: NOW + 2 * DAY },
  })
  assert.deepEqual(r, { expiresAt: NOW + HOUR })
  assert.deepEqual(capExpiry({ requestedExpiresAt: NOW + DAY, classMaxExpiresAt: NOW + DAY }), {
    expiresAt: NOW + DAY,
  })
})

test('capExpiry: cut by the class max_ttl', () => {
  const r = capExpiry({
    requestedExpiresAt: NOW + 90 * DAY,
    classMaxExpiresAt: NOW + 30 * DAY,
    parent: { id: 'tok_parent', expiresAt: NOW + 60 * DAY },
  })
  assert.deepEqual(r, {
    expiresAt: NOW + 30 * DAY,
    capped: { requested: NOW + 90 * DAY, granted: NOW + 30 * DAY, by: 'class_max_ttl' },
  })
})

test('capExpiry: cut by the parent, naming it; a tie with the class max is reported as the parent', () => {
  const r = capExpiry({
    requestedExpiresAt: NOW + 7 * DAY,
    classMaxExpiresAt: NOW + 30 * DAY,
    parent: { id: 'tok_parent', expiresAt: NOW + 2 * DAY },
  })
  assert.deepEqual(r, {
    expiresAt: NOW + 2 * DAY,
    capped: { requested: NOW + 7 * DAY, granted: NOW + 2 * DAY, by: 'parent', parentId: 'tok_parent' },
  })
  const tie = capExpiry({
    requestedExpiresAt: NOW + 7 * DAY,
    classMaxExpiresAt: NOW + 2 * DAY,
    parent: { id: 'tok_parent', expiresAt: NOW + 2 * DAY },
  })
  assert.equal(tie.capped?.by, 'parent')
  assert.throws(() => capExpiry({ requestedExpiresAt: Number.NaN, classMaxExpiresAt: NOW }), TypeError)
})

test('signing key retention is derived from the longest effective lifetime of what it signs', () => {
  // derived_token asks for 90d but is capped by api_token's 30d: retention is 30d, not 90d.
  assert.equal(signingKeyRetention(cfg), 30 * DAY)
  // Raise api_token's max: retention follows without being configured.
  const longer = { ...cfg, api_token: { ttlSeconds: 7 * DAY, maxTtlSeconds: 60 * DAY } }
  assert.equal(signingKeyRetention(longer), 60 * DAY)
  // Sessions and refresh tokens are not signed by the key ring.
  const longSession = { ...cfg, session: { ttlSeconds: DAY, maxTtlSeconds: 365 * DAY } }
  assert.equal(signingKeyRetention(longSession), 30 * DAY)
})

const opts = { now: NOW, windowSeconds: HOUR, share: 0.5, minCount: 10 }

test('cliff: 60% of live credentials expiring within one hour', () => {
  const expiries: number[] = []
  for (let i = 0; i < 60; i++) expiries.push(NOW + 10 * DAY + i * 50) // 60 within 50 minutes
  for (let i = 0; i < 40; i++) expiries.push(NOW + 3 * HOUR + i * 6 * HOUR) // 40 spread over 10 days
  const r = detectExpiryCliff(expiries, opts)
  assert.equal(r.cliff, true)
  assert.equal(r.total, 100)
  assert.equal(r.count, 60)
  assert.equal(r.share, 0.6)
  assert.equal(r.windowStart, NOW + 10 * DAY)
  assert.equal(r.windowEnd, NOW + 10 * DAY + HOUR)
})

test('no cliff when expiries are spread evenly; the worst window is still reported', () => {
  const expiries = Array.from({ length: 1000 }, (_, i) => NOW + (i + 1) * 10 * 60) // one every 10 minutes
  const r = detectExpiryCliff(expiries, opts)
  assert.equal(r.cliff, false)
  assert.equal(r.total, 1000)
  assert.equal(r.count, 6) // windows are half-open: [t, t + 1h) holds six
  assert.equal(r.windowStart, NOW + 600)
})

test('expired credentials are ignored', () => {
  const expired = Array.from({ length: 100 }, (_, i) => NOW - DAY + i) // a cliff, but in the past
  const live = Array.from({ length: 20 }, (_, i) => NOW + (i + 1) * DAY)
  const r = detectExpiryCliff([...expired, NOW, ...live], opts) // expiring exactly at now is not alive
  assert.equal(r.cliff, false)
  assert.equal(r.total, 20)
  assert.equal(r.count, 1)
  assert.deepEqual(detectExpiryCliff(expired, opts), { cliff: false, total: 0 })
})

test('minCount: a large share of very few credentials is not a cliff', () => {
  const few = [NOW + DAY, NOW + DAY + 10, NOW + DAY + 20, NOW + 5 * DAY]
  const r = detectExpiryCliff(few, opts)
  assert.equal(r.count, 3)
  assert.equal(r.share, 0.75)
  assert.equal(r.cliff, false)
  assert.equal(detectExpiryCliff(few, { ...opts, minCount: 3 }).cliff, true)
})

test('share is strict: exactly the threshold is not a cliff', () => {
  const half = [
    ...Array.from({ length: 10 }, () => NOW + DAY),
    ...Array.from({ length: 10 }, (_, i) => NOW + (i + 2) * DAY),
  ]
  assert.equal(detectExpiryCliff(half, opts).share, 0.5)
  assert.equal(detectExpiryCliff(half, opts).cliff, false)
})

test('bad options are a TypeError', () => {
  assert.throws(() => detectExpiryCliff([], { ...opts, windowSeconds: 0 }), TypeError)
  assert.throws(() => detectExpiryCliff([], { ...opts, share: 1.5 }), TypeError)
  assert.throws(() => detectExpiryCliff([], { ...opts, minCount: 0 }), TypeError)
})

test('seed 001: children renewed daily all die at their parent token’s 32-day cap, and that is detected', () => {
  // The parent was leased 30 days ago with a backend default max of 32 days nobody configured.
  const parent = { id: 'system_token', expiresAt: NOW - 30 * DAY + 32 * DAY }
  const childMax = 90 * DAY
  // 500 credentials, each last renewed sometime in the past week, each asking for 7 more days.
  const renewals = Array.from({ length: 500 }, (_, i) => NOW - Math.floor((i * 7 * DAY) / 500))
  const expiries: number[] = []
  let cappedByParent = 0
  for (const renewedAt of renewals) {
    const r = capExpiry({
      requestedExpiresAt: renewedAt + 7 * DAY,
      classMaxExpiresAt: renewedAt + childMax,
      parent,
    })
    if (r.capped !== undefined) {
      assert.equal(r.capped.by, 'parent')
      assert.equal(r.capped.parentId, 'system_token')
      cappedByParent++
    }
    expiries.push(r.expiresAt)
  }
  assert.ok(cappedByParent > 300, 'every cap is reported, not silent')
  const options = { now: NOW, windowSeconds: HOUR, share: 0.5, minCount: 50 }
  const r = detectExpiryCliff(expiries, options)
  assert.equal(r.cliff, true)
  // The worst window ends just past the cliff: it holds every capped child plus the few expiring just before.
  assert.ok(r.windowStart! <= parent.expiresAt && parent.expiresAt < r.windowEnd!)
  assert.ok(r.count! >= cappedByParent && r.count! - cappedByParent < 5)
  assert.equal(r.total, 500)

  // The same renewals without the inherited cap spread over the week: no cliff.
  const spread = renewals.map((renewedAt) => renewedAt + 7 * DAY)
  assert.equal(detectExpiryCliff(spread, options).cliff, false)
})

test('the lifetime table for gatehouse check', () => {
  const table = formatLifetimeTable(effectiveLifetimes(cfg))
  assert.equal(
    table,
    [
      'class          ttl  max_ttl  effective max  notes',
      'session        12h  7d       7d',
      'refresh        1d   30d      7d             capped by session max_ttl (7d)',
      'api_token      7d   30d      30d',
      'derived_token  1h   90d      30d            capped by api_token max_ttl (30d)',
      'signing_key    30d  90d      90d',
    ].join('\n'),
  )
  const cut = formatLifetimeTable(
    effectiveLifetimes({ ...cfg, refresh: { ttlSeconds: 14 * DAY, maxTtlSeconds: 30 * DAY } }),
  )
  assert.match(cut, /^refresh +14d +30d +7d +capped by session max_ttl \(7d\); ttl cut to 7d$/m)
})
