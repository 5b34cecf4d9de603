/**
 * `gatehouse sessions` against the SQLite store a running gateway uses: a session revoked by the CLI
 * (by id, or every session of a user) is refused by the gateway without a restart, listed, and audited.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { loadConfigFile } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { runCli } from '../helpers/cli.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { sessionCookie } from '../helpers/session.ts'

const env = {
  GH_CLIENT_SECRET: 'sessions-cli-client-secret',
  GH_SESSION_SECRET: 'sessions-cli-session-secret-0123456789abcdef',
}

describe('gatehouse sessions', () => {
  let upstream: RecordingUpstream
  let gateway: Gateway
  let configFile: string
  let base: string
  const cli = (...args: string[]) => runCli([...args, '--config', configFile], env)
  const call = (cookie: string) =>
    fetch(`${base}/api/thing`, { headers: { cookie, accept: 'application/json' } })

  /** Polls until the gateway answers `status` for `cookie` (it reloads revocations every 20 ms here). */
  async function until(cookie: string, status: number): Promise<Response> {
    for (let i = 0; i < 200; i++) {
      const r = await call(cookie)
      if (r.status === status) return r
      await r.body?.cancel()
      await new Promise((ok) => setTimeout(ok, 10))
    }
    assert.fail(`not ${status} within 2 s`)
  }

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    upstream = await startRecordingUpstream()
    const dir = mkdtempSync(join(tmpdir(), 'gh-sessions-'))
    configFile = join(dir, 'gatehouse.yaml')
    writeFileSync(
      configFile,
      `public_url: ${base}
upstream: ${upstream.url}
listen: { host: 127.0.0.1, port: ${port} }
data_dir: ${JSON.stringify(join(dir, 'data'))}
provider: { issuer: "http://127.0.0.1:9/idp", client_id: gh, client_secret: { env: GH_CLIENT_SECRET }, timeout: 1s }
session: { secrets: [{ env: GH_SESSION_SECRET }] }
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 7d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
shedding: false
log: { level: error }
`,
    )
    const { config, baseDir } = loadConfigFile(configFile)
    gateway = await startGateway(config, {
      baseDir,
      log: silentLogger,
      admin: false,
      env,
      refreshRevocationsMs: 20,
      probeTLS: false,
    })
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
  })

  test('revoke SID: that session is refused by the running gateway, the same user’s others are not', async () => {
    const one = await sessionCookie(env.GH_SESSION_SECRET, {
      sid: 'cli-s-1',
      identity: { sub: 'alice', user: 'alice', groups: [] },
    })
    const two = await sessionCookie(env.GH_SESSION_SECRET, {
      sid: 'cli-s-2',
      identity: { sub: 'alice', user: 'alice', groups: [] },
    })
    assert.equal((await call(one)).status, 200)
    const r = await cli('sessions', 'revoke', 'cli-s-1')
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /^revoked session cli-s-1 \(refused until \d{4}-/)
    const refused = await until(one, 401)
    assert.equal(((await refused.json()) as { error: string }).error, 'session_revoked')
    assert.match(refused.headers.get('set-cookie') ?? '', /^gatehouse=; .*Max-Age=0/)
    assert.equal((await call(two)).status, 200)
  })

  test('revoke --user: every session of that user signed in until now, and no one else’s', async () => {
    const alice = await sessionCookie(env.GH_SESSION_SECRET, {
      sid: 'cli-s-3',
      identity: { sub: 'alice', user: 'alice', groups: [] },
    })
    const bob = await sessionCookie(env.GH_SESSION_SECRET, {
      sid: 'cli-s-4',
      identity: { sub: 'bob', user: 'bob', groups: [] },
    })
    const r = await cli('sessions', 'revoke', '--user', 'alice')
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /^revoked every session of alice signed in until /)
    await until(alice, 401)
    assert.equal((await call(bob)).status, 200)
  })

  test('list-revoked shows both, and the audit log has who was signed out', async () => {
    const list = await cli('sessions', 'list-revoked', '--json')
    assert.equal(list.status, 0, list.stderr)
    const entries = JSON.parse(list.stdout) as Array<{ kind: string; value: string }>
    assert.deepEqual(entries.map((e) => `${e.kind}:${e.value}`).sort(), ['sid:cli-s-1', 'sub:alice'])
    const text = await cli('sessions', 'list-revoked')
    assert.match(text.stdout, /^kind +revoked +until +what\n/)
    const audit = await cli('audit', '--json')
    const events = JSON.parse(audit.stdout) as Array<{
      type: string
      subject?: string
      detail: Record<string, unknown>
    }>
    const revoked = events.filter((e) => e.type === 'session_revoked')
    assert.deepEqual(
      revoked.map((e) => [e.subject ?? null, e.detail['kind'], e.detail['sid'] ?? null, e.detail['reason']]),
      [
        [null, 'sid', 'cli-s-1', 'cli'],
        ['alice', 'sub', null, 'cli'],
      ],
    )
  })

  test('wrong usage changes nothing: exit 1 and the usage', async () => {
    for (const args of [
      ['sessions', 'revoke'],
      ['sessions', 'revoke', 'cli-s-9', '--user', 'alice'],
      ['sessions', 'list'],
      ['sessions', 'revoke', 'cli-s-9', '--provider', 'corp'],
    ]) {
      const r = await cli(...args)
      assert.equal(r.status, 1, args.join(' '))
      assert.match(r.stderr, /Usage:\n {2}gatehouse sessions revoke SID/)
    }
    const bad = await cli('sessions', 'revoke', 'has space')
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /SID must be 1-255 visible ASCII characters/)
    // This config has a lone provider: --provider names nothing.
    const noList = await cli('sessions', 'revoke', '--user', 'alice', '--provider', 'corp')
    assert.equal(noList.status, 1)
    assert.match(noList.stderr, /--provider corp is not in the config's providers \(it has none\)/)
    const list = await cli('sessions', 'list-revoked', '--json')
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 2)
  })
})
