/** Config `session.cookie_domain` (docs/apps.md): every host it must cover, and what is refused. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { ConfigError, validateConfig } from '../../src/config/load.ts'

const app = (host: string) => ({ name: host.split('.')[0], host, upstream: 'http://127.0.0.1:3000' })

function check(publicUrl: string, domain: string, hosts: string[]) {
  return validateConfig({
    public_url: publicUrl,
    provider: { issuer: 'https://idp.example.com', client_id: 'gh', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }], cookie_domain: domain },
    lifetimes: DEV_LIFETIMES,
    apps: hosts.map(app),
  })
}

function problems(...args: Parameters<typeof check>): string[] {
  try {
    check(...args)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  assert.fail('expected a refusal')
}

test('a cookie domain covering public_url and every app host is taken, lower-cased, without a leading dot', () => {
  const c = check('https://gate.example.com', '.Example.com', [
    'grafana.example.com',
    'wiki.tools.example.com',
  ])
  assert.equal(c.session.cookie_domain, 'example.com')
  assert.equal(
    check('http://gate.apps.localhost:8080', 'apps.localhost', ['a.apps.localhost']).session.cookie_domain,
    'apps.localhost',
  )
})

test('refused: a host outside the domain, public_url outside it, a one-label or malformed domain', () => {
  assert.deepEqual(problems('https://gate.example.com', 'example.com', ['grafana.example.org']), [
    'apps[0].host: expected a host under session.cookie_domain example.com, got grafana.example.org',
  ])
  assert.match(
    problems('https://gate.other.com', 'example.com', ['grafana.example.com']).join('\n'),
    /session.cookie_domain: expected a domain public_url's host \(gate.other.com\) is in/,
  )
  // A suffix that is not a label boundary is not "under".
  assert.match(
    problems('https://gate.example.com', 'example.com', ['badexample.com']).join('\n'),
    /apps\[0\]\.host/,
  )
  for (const bad of ['com', 'localhost', 'example..com', 'exa mple.com', 'https://example.com'])
    assert.match(
      problems('https://gate.example.com', bad, ['a.example.com']).join('\n'),
      /session.cookie_domain/,
      bad,
    )
})
