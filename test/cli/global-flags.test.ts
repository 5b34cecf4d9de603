/**
 * Global options (`--config`, `--data`) are accepted before the command name as well as after it, as
 * people type them (`gatehouse --config F tokens list`).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { runCli } from '../helpers/cli.ts'

const env = {
  GH_SECRET: 'global-flags-client-secret',
  GH_SESSION: 'global-flags-session-secret-0123456789abcdef',
}

describe('gatehouse: global options anywhere', () => {
  let dir: string
  let config: string
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'gh-cli-flags-'))
    config = join(dir, 'gatehouse.yaml')
    writeFileSync(
      config,
      `public_url: https://app.example.com
upstream: http://127.0.0.1:3000
data_dir: ${JSON.stringify(join(dir, 'data'))}
provider: { issuer: https://idp.example.com, client_id: gh, client_secret: { env: GH_SECRET } }
session: { secrets: [{ env: GH_SESSION }] }
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 7d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
`,
    )
  })

  test('--config before the command, with a space or =, means the same as after it', async () => {
    const issued = await runCli(
      ['--config', config, 'tokens', 'issue', '--subject', 'ci-bot', '--ttl', '1d'],
      env,
    )
    assert.equal(issued.status, 0, issued.stderr)
    assert.match(issued.stdout, /^gth_/)
    const after = await runCli(['tokens', 'list', '--json', '--config', config], env)
    const beforeSpace = await runCli(['--config', config, 'tokens', 'list', '--json'], env)
    const beforeEq = await runCli([`--config=${config}`, 'tokens', 'list', '--json'], env)
    for (const r of [after, beforeSpace, beforeEq]) {
      assert.equal(r.status, 0, r.stderr)
      assert.doesNotMatch(r.stderr, /unknown command/)
    }
    assert.match(after.stdout, /ci-bot/)
    assert.equal(beforeSpace.stdout, after.stdout)
    assert.equal(beforeEq.stdout, after.stdout)
  })

  test('-c before check; an unknown first word is still an unknown command', async () => {
    const r = await runCli(['-c', config, 'check'], env)
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /valid/)
    const bad = await runCli(['--config', config, 'frobnicate'], env)
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /unknown command "frobnicate"/)
    // A dangling --config is not taken as a command name.
    const dangling = await runCli(['--config'], env)
    assert.equal(dangling.status, 1)
    assert.match(dangling.stderr, /unknown command "--config"/)
  })
})
