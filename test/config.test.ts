import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { ConfigError, validateConfig } from '../src/config/load.ts'

const good = {
  public_url: 'https://app.example.com',
  upstream: 'http://127.0.0.1:3000',
  provider: { issuer: 'https://idp.example.com', client_id: 'gh', client_secret: { env: 'GH_SECRET' } },
  session: { secrets: [{ env: 'GH_SESSION' }] },
  lifetimes: {
    session: { ttl: '12h', max_ttl: '7d' },
    refresh: { ttl: '7d', max_ttl: '30d' },
    api_token: { ttl: '30d', max_ttl: '90d' },
    derived_token: { ttl: '1h', max_ttl: '1d' },
    signing_key: { ttl: '30d', max_ttl: '180d' },
  },
}

function problems(input: unknown) {
  try {
    validateConfig(input)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

test('a minimal config validates, gets explicit defaults, and is frozen', () => {
  const c = validateConfig(good)
  assert.equal(c.lifetimes.session.ttl, 43200)
  assert.equal(c.lifetimes.session.max_ttl, 604800)
  assert.equal(c.session.refresh_before, 600)
  assert.equal(c.admin.host, '127.0.0.1')
  assert.ok(Object.isFrozen(c.lifetimes.session))
})

test('errors name the path, what was expected and what was found', () => {
  const p = problems({
    ...good,
    lifetimes: { ...good.lifetimes, api_token: { ttl: '30d' } },
    listen: { port: 'eighty' },
  })
  const byPath = Object.fromEntries(p.map((x) => [x.path, x.message]))
  assert.match(byPath['lifetimes.api_token.max_ttl']!, /required: expected .*got nothing/)
  assert.match(byPath['listen.port']!, /expected number, got "eighty"/)
})

test('inline secrets, unknown keys, http issuers and bad durations are refused', () => {
  const p = problems({
    ...good,
    provider: { ...good.provider, client_secret: 'hunter2', issuer: 'http://idp.example.com' },
    lifetimes: { ...good.lifetimes, session: { ttl: '12 hours', max_ttl: '7d' } },
    surprise: 1,
  })
  const text = JSON.stringify(p)
  assert.match(text, /provider.client_secret/)
  assert.match(text, /never written inline/)
  assert.match(text, /lifetimes.session.ttl.*duration/)
  assert.match(text, /surprise/)
  assert.ok(!text.includes('hunter2'), 'a secret value is never echoed')
})

test('max_ttl below ttl and bad route patterns are refused', () => {
  const p = problems({
    ...good,
    lifetimes: { ...good.lifetimes, session: { ttl: '7d', max_ttl: '1d' } },
    routes: [{ path: '/a*b', allow: 'anonymous' }],
  })
  assert.deepEqual(p.map((x) => x.path).sort(), ['lifetimes.session.max_ttl', 'routes[0].path'])
})

test('gatehouse check: exit 0 with the lifetime table, exit 1 with precise errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-check-'))
  const ok = join(dir, 'ok.yaml')
  writeFileSync(
    ok,
    `public_url: https://app.example.com
upstream: http://127.0.0.1:3000
provider:
  issuer: https://idp.example.com
  client_id: gh
  client_secret: { env: GH_SECRET }
session:
  secrets: [{ env: GH_SESSION }]
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
routes:
  - { path: /public/*, allow: anonymous }
  - { path: /admin/*, allow: { groups: [admins] } }
`,
  )
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'public_url: ftp://x\nupstream: http://127.0.0.1:3000\n')
  const run = (file: string) =>
    spawnSync(process.execPath, ['src/cli/main.ts', 'check', '--config', file], { encoding: 'utf8' })
  const a = run(ok)
  assert.equal(a.status, 0, a.stderr)
  assert.match(a.stdout, /session\s+12h\s+7d/)
  assert.match(a.stdout, /__Host-gatehouse/)
  assert.match(a.stdout, /\/admin\/\*\s+groups \[admins\]/)
  const b = run(bad)
  assert.equal(b.status, 1)
  assert.match(b.stderr, /public_url: expected an http\(s\) URL/)
  assert.match(b.stderr, /provider: required: expected object, got nothing/)
})

test('the example configs in examples/ validate', () => {
  for (const file of ['examples/gatehouse.yaml', 'examples/cognito.yaml', 'examples/providers.yaml']) {
    const r = spawnSync(process.execPath, ['src/cli/main.ts', 'check', '--config', file], {
      encoding: 'utf8',
    })
    assert.equal(r.status, 0, `${file}: ${r.stderr}`)
    // Shipped examples are what people copy: they must not warn either.
    assert.doesNotMatch(r.stdout, /Warnings/, `${file} warns:\n${r.stdout}`)
  }
})
