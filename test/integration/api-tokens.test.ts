/**
 * Gatehouse's own API tokens end to end: issued by the CLI, accepted by a running gateway on the data
 * port while the identity provider is stopped (seed 000), revoked by the CLI and refused by the
 * gateway without a restart, keys rotated by the CLI, lifetimes capped visibly, and the expiry cliff
 * of seed 001 reported by `gatehouse check`.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeProtectedHeader } from 'jose'
import { type Gateway, startGateway } from '../../src/app.ts'
import { loadConfigFile } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { runCli } from '../helpers/cli.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const env = { GH_CLIENT_SECRET: '', GH_SESSION_SECRET: 'api-token-test-session-secret-0123456789abcdef' }

describe('API tokens from the CLI to the data port', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let configFile: string
  let base: string

  // Asynchronous: the gateway runs in this process and must keep answering while the CLI runs (a blocked
  // event loop would let keep-alive timers expire under requests already written to the socket).
  const cli = (...args: string[]) => runCli([...args, '--config', configFile], env)
  const issue = async (...args: string[]) => {
    const r = await cli('tokens', 'issue', ...args)
    assert.equal(r.status, 0, r.stderr)
    return { token: r.stdout.trim(), stderr: r.stderr }
  }
  const call = (token: string) =>
    fetch(`${base}/api/thing`, { headers: { authorization: `Bearer ${token}` } })

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`] })
    env.GH_CLIENT_SECRET = idp.clientSecret
    upstream = await startRecordingUpstream()
    const dir = mkdtempSync(join(tmpdir(), 'gh-tokens-'))
    configFile = join(dir, 'gatehouse.yaml')
    writeFileSync(
      configFile,
      `public_url: ${base}
upstream: ${upstream.url}
listen: { host: 127.0.0.1, port: ${port} }
provider: { issuer: "${idp.issuer}", client_id: ${idp.clientId}, client_secret: { env: GH_CLIENT_SECRET }, timeout: 2s }
session: { secrets: [{ env: GH_SESSION_SECRET }] }
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 7d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
expiry_cliff: { window: 1h, share: 0.5, min_count: 10 }
routes:
  - { path: /api/write/*, allow: { scopes: [write] } }
# A loaded test machine must not make the gateway shed these requests.
shedding: false
log: { level: error }
`,
    )
    const { config, baseDir } = loadConfigFile(configFile)
    gateway = await startGateway(config, {
      baseDir,
      log: silentLogger,
      admin: { host: '127.0.0.1', port: 0 },
      env,
      refreshRevocationsMs: 20,
    })
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  test('a token issued by the CLI works on the data port, also with the provider stopped', async () => {
    const { token } = await issue('--subject', 'ci-bot', '--scope', 'deploy,read')
    assert.match(token, /^gth_[\w-]+\.[\w-]+\.[\w-]+$/)
    const ok = await call(token)
    assert.equal(ok.status, 200)
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-user'], 'ci-bot')

    await idp.close()
    const count = upstream.requests.length
    const still = await call(token)
    assert.equal(still.status, 200, 'verified with keys in memory, no call to the provider')
    assert.equal(upstream.requests.length, count + 1)
    // And from a cold cache: a token the gateway has never seen.
    const fresh = (await issue('--subject', 'cold-bot')).token
    assert.equal((await call(fresh)).status, 200)
  })

  test('the JWKS publishes the signing key with caching headers', async () => {
    const { token } = await issue('--subject', 'jwks-check')
    const r = await fetch(`${base}/.well-known/jwks.json`)
    assert.equal(r.status, 200)
    assert.match(r.headers.get('cache-control')!, /^public, max-age=\d+$/)
    const { keys } = (await r.json()) as { keys: Array<Record<string, unknown>> }
    const kid = decodeProtectedHeader(token.slice(4)).kid
    assert.ok(keys.some((k) => k['kid'] === kid))
    assert.ok(keys.length >= 2, 'the next key is published before it signs')
    for (const k of keys) assert.equal(k['d'], undefined, 'no private key material')
  })

  test('revoked by the CLI, refused by the running gateway without a restart', async () => {
    const { token } = await issue('--subject', 'to-revoke')
    assert.equal((await call(token)).status, 200)
    const jti = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti
    const r = await cli('tokens', 'revoke', jti)
    assert.equal(r.status, 0, r.stderr)
    let status = 200
    for (let i = 0; i < 200 && status === 200; i++) {
      status = (await call(token)).status
      if (status === 200) await new Promise((ok) => setTimeout(ok, 10))
    }
    assert.equal(status, 401)
    const refused = await call(token)
    assert.match(refused.headers.get('www-authenticate')!, /error="invalid_token"/)
  })

  test('cascade: refused without --cascade when children live, then revokes the subtree and says how many first', async () => {
    const parent = (await issue('--subject', 'parent-bot', '--scope', 'read,write')).token
    const parentJti = (
      JSON.parse(Buffer.from(parent.split('.')[1]!, 'base64url').toString()) as { jti: string }
    ).jti
    const child = (await issue('--subject', 'child-bot', '--scope', 'read', `--parent=${parentJti}`)).token
    const no = await cli('tokens', 'revoke', parentJti)
    assert.equal(no.status, 1)
    assert.match(no.stderr, /1 live descendant.*--cascade.*ERR_TOKEN_HAS_CHILDREN/)
    assert.equal((await call(child)).status, 200, 'nothing changed')
    const yes = await cli('tokens', 'revoke', parentJti, '--cascade')
    assert.equal(yes.status, 0, yes.stderr)
    assert.match(yes.stdout, /revoking \S+ and 1 descendant\(s\)/)
    await gateway.services.tokens.refreshRevocations()
    assert.equal((await call(parent)).status, 401)
    assert.equal((await call(child)).status, 401)
  })

  test('a token asked for longer than its class allows is capped, and the CLI says so', async () => {
    const { stderr } = await issue('--subject', 'greedy', '--ttl', '365d')
    assert.match(stderr, /capped: asked until \S+, issued until \S+ because the api\/derived token max_ttl/)
    const bad = await cli('tokens', 'issue', '--subject', 'x', '--ttl', 'forever')
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /--ttl expected a duration/)
  })

  test('keys rotate: the new key signs at once; tokens signed by the old one still pass', async () => {
    const before = (await issue('--subject', 'pre-rotation')).token
    const oldKid = decodeProtectedHeader(before.slice(4)).kid
    const r = await cli('keys', 'rotate')
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /next → current \(on demand\)/)
    const afterToken = (await issue('--subject', 'post-rotation')).token
    assert.notEqual(decodeProtectedHeader(afterToken.slice(4)).kid, oldKid)
    assert.equal((await call(before)).status, 200)
    assert.equal((await call(afterToken)).status, 200)
    const list = await cli('keys', 'list', '--json')
    const states = (JSON.parse(list.stdout) as Array<{ kid: string; state: string }>).map((k) => [
      k.kid === oldKid,
      k.state,
    ])
    assert.ok(states.some(([old, state]) => old && state === 'retired'))
  })

  test('gatehouse check warns of an expiry cliff among live tokens (seed 001)', async () => {
    for (let i = 0; i < 12; i++) await issue('--subject', `batch-${i}`, '--ttl', '7d')
    const r = await cli('check')
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /expiry cliff: \d+ of \d+ live API tokens/)
    assert.match(r.stdout, /derived_token\s+1h\s+1d\s+1d/)
  })

  test('inspect and list never show the signature or the secret', async () => {
    const { token } = await issue('--subject', 'inspect-me')
    const r = await cli('tokens', 'inspect', token)
    assert.equal(r.status, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout).status, 'valid')
    assert.ok(!r.stdout.includes(token.split('.')[2]!), 'no signature in the output')
    const list = await cli('tokens', 'list', '--json')
    assert.ok(!list.stdout.includes(token.split('.')[2]!))
  })

  test('the admin metrics export the expiry-cliff gauge', async () => {
    const m = await (await fetch(`${gateway.adminUrl}/metrics`)).text()
    assert.match(m, /gatehouse_expiry_cliff\{class="api_token"\} [01]/)
  })

  test('a route requiring a scope: 403 insufficient_scope without it, the scopes upstream with it', async () => {
    const reader = (await gateway.services.tokens.issue({ subject: 'reader-bot', scopes: ['read'] })).token
    const writer = (await gateway.services.tokens.issue({ subject: 'writer-bot', scopes: ['read', 'write'] }))
      .token
    const post = (token: string) =>
      fetch(`${base}/api/write/items`, {
        method: 'POST',
        // A client's own copy of the header never reaches the upstream.
        headers: { authorization: `Bearer ${token}`, 'x-auth-request-scopes': 'write admin' },
        body: '{}',
      })
    const count = upstream.requests.length
    const refused = await post(reader)
    assert.equal(refused.status, 403)
    assert.equal(
      refused.headers.get('www-authenticate'),
      `Bearer realm="gatehouse", error="insufficient_scope", scope="write"`,
    )
    const body = (await refused.json()) as Record<string, unknown>
    assert.equal(body['error'], 'insufficient_scope')
    assert.equal(body['scope'], 'write')
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')

    const ok = await post(writer)
    assert.equal(ok.status, 200)
    await ok.arrayBuffer()
    assert.equal(upstream.requests.length, count + 1)
    const seen = upstream.requests.at(-1)!.headers
    assert.equal(seen['x-auth-request-user'], 'writer-bot')
    assert.equal(seen['x-auth-request-scopes'], 'read write')
  })
})
