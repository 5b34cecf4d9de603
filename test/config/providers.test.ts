/**
 * Config `providers` (docs/providers.md): what is refused and why, `provider` filled from the first,
 * per-provider secrets, and which changes a reload keeps for a restart.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { ConfigError, resolveCoreSecrets, validateConfig } from '../../src/config/load.ts'
import { providerList } from '../../src/config/providers.ts'
import { restartOnlyChanges, withRunningRestartOnly } from '../../src/reload.ts'

const corp = {
  name: 'corp',
  issuer: 'http://127.0.0.1:9/corp',
  client_id: 'gh',
  client_secret: { env: 'CORP' },
}
const contractors = {
  name: 'contractors',
  title: 'Contractor account',
  issuer: 'http://127.0.0.1:9/contractors',
  client_id: 'gh',
  client_secret: { env: 'CONTRACTORS' },
}

function config(extra: Record<string, unknown>) {
  return validateConfig({
    public_url: 'http://localhost:8080',
    upstream: 'http://127.0.0.1:3000',
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    ...extra,
  })
}

function problems(extra: Record<string, unknown>): string[] {
  try {
    config(extra)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  assert.fail('expected the config to be refused')
}

test('a providers list: provider is its first, each keeps its name and title, secrets are read per provider', () => {
  const c = config({ providers: [corp, contractors] })
  assert.equal(c.provider.issuer, corp.issuer)
  assert.deepEqual(
    providerList(c).map((p) => [p.name, p.title, p.path]),
    [
      ['corp', 'corp', 'providers[0]'],
      ['contractors', 'Contractor account', 'providers[1]'],
    ],
  )
  const secrets = resolveCoreSecrets(c, '.', {
    S: 's',
    CORP: 'corp-secret',
    CONTRACTORS: 'contractors-secret',
  })
  assert.deepEqual(
    secrets.providers.map((p) => p.clientSecret),
    ['corp-secret', 'contractors-secret'],
  )
  assert.equal(secrets.clientSecret, 'corp-secret')
  assert.throws(
    () => resolveCoreSecrets(c, '.', { S: 's', CORP: 'x' }),
    (err: ConfigError) => err.problems[0]!.path === 'providers[1].client_secret',
  )
  // A lone provider is `default`, as before.
  const { name: _, ...lonely } = corp
  const lone = config({ provider: lonely })
  assert.deepEqual(
    providerList(lone).map((p) => [p.name, p.path]),
    [['default', 'provider']],
  )
})

test('refused: neither or both, a name twice, the same client twice, an app naming an unknown provider', () => {
  const { name: _, ...lonely } = corp
  assert.deepEqual(problems({}), [
    'provider: required: expected object, got nothing (or a list of providers)',
  ])
  assert.match(
    problems({ provider: corp, providers: [corp] }).join('\n'),
    /providers: expected either provider/,
  )
  assert.match(
    problems({ providers: [corp, { ...contractors, name: 'corp' }] }).join('\n'),
    /providers\[1\]\.name: expected a name of its own: providers\[0\] is already called corp/,
  )
  assert.match(
    problems({ providers: [corp, { ...corp, name: 'again' }] }).join('\n'),
    /providers\[1\]\.issuer: expected another issuer or client_id than providers\[0\]/,
  )
  assert.match(
    problems({ providers: [{ ...corp, name: 'Corp!' }] }).join('\n'),
    /providers\[0\]\.name: expected lower-case/,
  )
  assert.match(
    problems({ providers: [corp, { ...contractors, client_auth: 'none' }] }).join('\n'),
    /providers\[1\]\.client_secret: client_auth none is a public client/,
  )
  assert.match(
    problems({ providers: [{ ...corp, issuer: 'http://idp.example/x' }] }).join('\n'),
    /providers\[0\]\.issuer: expected https/,
  )
  const app = { name: 'wiki', host: 'wiki.localhost', upstream: 'http://127.0.0.1:3000' }
  assert.match(
    problems({ upstream: undefined, providers: [corp], apps: [{ ...app, providers: ['nobody'] }] }).join(
      '\n',
    ),
    /apps\[0\]\.providers\[0\]: expected one of corp, got nobody/,
  )
  assert.match(
    problems({ upstream: undefined, provider: lonely, apps: [{ ...app, providers: ['corp'] }] }).join('\n'),
    /apps\[0\]\.providers: expected a top-level providers list/,
  )
})

test('a reload: adding a provider or changing its issuer waits for a restart; its other keys apply', () => {
  const running = config({ providers: [corp, contractors] })
  const retitled = config({ providers: [corp, { ...contractors, title: 'Partners', timeout: 9 }] })
  assert.deepEqual(restartOnlyChanges(running, retitled), [])
  const added = config({
    providers: [corp, contractors, { ...corp, name: 'third', issuer: 'http://127.0.0.1:9/third' }],
  })
  assert.deepEqual(restartOnlyChanges(running, added), ['providers'])
  const kept = withRunningRestartOnly(running, added)
  assert.deepEqual(
    kept.providers?.map((p) => p.name),
    ['corp', 'contractors'],
  )
  assert.equal(kept.provider, kept.providers![0], 'provider is still the first of the kept list')
  const moved = config({ providers: [{ ...corp, issuer: 'http://127.0.0.1:9/elsewhere' }, contractors] })
  assert.deepEqual(restartOnlyChanges(running, moved), ['provider.issuer', 'providers'])
})
