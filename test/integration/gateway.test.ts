/**
 * The Node gateway as a whole, without a provider round trip: sessions are minted with the same
 * secret. WebSocket upgrades go through the check; in-flight requests drain on shutdown;
 * `gatehouse start` exits cleanly on SIGTERM; `gatehouse users` manages the embedded provider's users.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, request } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { freePort } from '../helpers/net.ts'
import { sessionCookie as mintSessionCookie } from '../helpers/session.ts'

const SECRET = 'gateway-test-secret-0123456789-abcdefghij'

function sessionCookie(): Promise<string> {
  return mintSessionCookie(SECRET, {
    sid: 's1',
    identity: { sub: 'u1', user: 'u1', email: 'u1@example.com', groups: ['staff'] },
  })
}

async function gatewayFor(
  upstreamUrl: string,
  drain = '5s',
  extra: Record<string, unknown> = {},
  admin: { host: string; port: number } | false = false,
) {
  const config = validateConfig({
    public_url: 'http://localhost:8080',
    upstream: upstreamUrl,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-gw-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: { ...DEV_LIFETIMES, session: { ttl: '1h', max_ttl: '2h' } },
    shutdown: { drain },
    ...extra,
  })
  return startGateway(config, { baseDir: process.cwd(), log: silentLogger, admin, env: { S: SECRET } })
}

function upgrade(url: string, headers: Record<string, string>) {
  return new Promise<
    { kind: 'upgraded'; socket: Socket; res: IncomingMessage } | { kind: 'response'; res: IncomingMessage }
  >((resolve, reject) => {
    const req = request(url, { headers: { connection: 'Upgrade', upgrade: 'websocket', ...headers } })
    req.on('upgrade', (res, socket) => resolve({ kind: 'upgraded', socket: socket as Socket, res }))
    req.on('response', (res) => resolve({ kind: 'response', res }))
    req.on('error', reject)
    req.end()
  })
}

test('WebSocket upgrades: refused with 401 without a session (upstream not reached), passed through with one', async () => {
  const upgrades: IncomingMessage[] = []
  const origin = createServer((_req, res) => res.end('plain'))
  origin.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    upgrades.push(req)
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n')
    socket.on('data', (d) => socket.write(`echo:${d}`))
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  const port = (origin.address() as { port: number }).port
  const gateway = await gatewayFor(`http://127.0.0.1:${port}`)
  try {
    const refused = await upgrade(`${gateway.url}/ws`, { 'x-auth-request-user': 'root' })
    assert.equal(refused.kind, 'response')
    assert.equal(refused.res.statusCode, 401)
    refused.res.resume()
    assert.equal(upgrades.length, 0, 'the upstream was not reached')

    const ok = await upgrade(`${gateway.url}/ws`, {
      cookie: await sessionCookie(),
      'x-auth-request-user': 'root',
    })
    assert.equal(ok.kind, 'upgraded')
    if (ok.kind !== 'upgraded') return
    assert.equal(upgrades.length, 1)
    assert.equal(
      upgrades[0]!.headers['x-auth-request-user'],
      'u1',
      'identity from the session, not the client',
    )
    assert.equal(upgrades[0]!.headers.cookie, undefined, 'the session cookie is not forwarded')
    ok.socket.write('ping')
    const [data] = await once(ok.socket, 'data')
    assert.equal(String(data), 'echo:ping')
    ok.socket.destroy()
  } finally {
    await gateway.close()
    origin.closeAllConnections()
    origin.close()
  }
})

test('shutdown drains: a request in flight completes, new connections are refused', async () => {
  let release: (() => void) | undefined
  const origin = createServer((_req, res) => {
    release = () => res.end('slow answer')
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  const gateway = await gatewayFor(`http://127.0.0.1:${(origin.address() as { port: number }).port}`)
  const cookie = await sessionCookie()
  const inFlight = fetch(`${gateway.url}/slow`, { headers: { cookie } })
  while (release === undefined) await new Promise((r) => setImmediate(r))
  const closing = gateway.close()
  await assert.rejects(
    fetch(`${gateway.url}/new`, { headers: { cookie } }),
    'no new connections while draining',
  )
  release()
  const r = await inFlight
  assert.equal(r.status, 200)
  assert.equal(await r.text(), 'slow answer')
  await closing
  origin.closeAllConnections()
  origin.close()
})

test('gatehouse start: serves, then exits 0 on SIGTERM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-start-'))
  const port = await freePort()
  const file = join(dir, 'gatehouse.yaml')
  writeFileSync(
    file,
    `public_url: http://localhost:${port}
upstream: http://127.0.0.1:9
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: 0 }
provider: { issuer: "http://127.0.0.1:9/idp", client_id: c, client_secret: { env: GH_S } }
session: { secrets: [{ env: GH_S }] }
lifetimes:
  session: { ttl: 1h, max_ttl: 1d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
log: { level: error }
`,
  )
  const child = spawn(process.execPath, ['src/cli/main.ts', 'start', '--config', file], {
    env: { ...process.env, GH_S: SECRET },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  try {
    let r: Response | undefined
    for (let i = 0; i < 200 && r === undefined; i++) {
      r = await fetch(`http://127.0.0.1:${port}/api`, { headers: { accept: 'application/json' } }).catch(
        () => undefined,
      )
      if (r === undefined) await new Promise((ok) => setTimeout(ok, 25))
    }
    assert.equal(r?.status, 401)
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    assert.equal(code, 0)
  } finally {
    child.kill('SIGKILL')
  }
})

test('gatehouse start: a bad config exits 1 naming the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-start-'))
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'public_url: https://app.example.com\nupstream: nope\n')
  const r = spawnSync(process.execPath, ['src/cli/main.ts', 'start', '--config', file], { encoding: 'utf8' })
  assert.equal(r.status, 1)
  assert.match(r.stderr, /upstream: expected an http\(s\) URL; got "nope"/)
})

test('gatehouse users: add (password on stdin or generated), list, remove, refuse duplicates', () => {
  const data = mkdtempSync(join(tmpdir(), 'gh-users-'))
  const run = (args: string[], input?: string) =>
    spawnSync(process.execPath, ['src/cli/main.ts', 'users', ...args, '--data', data], {
      encoding: 'utf8',
      input,
    })
  const add = run(
    ['add', 'bob', '--email', 'bob@example.com', '--groups', 'ops,dev', '--password-stdin'],
    'a long password\n',
  )
  assert.equal(add.status, 0, add.stderr)
  assert.doesNotMatch(add.stdout, /a long password/)
  const gen = run(['add', 'carol'])
  assert.equal(gen.status, 0, gen.stderr)
  assert.match(gen.stdout, /password: \S{12,}/)
  const dup = run(['add', 'bob', '--password-stdin'], 'another password\n')
  assert.equal(dup.status, 1)
  assert.match(dup.stderr, /ERR_USER_EXISTS/)
  const list = JSON.parse(run(['list', '--json']).stdout)
  assert.deepEqual(
    list.map((u: { username: string; groups: string[] }) => [u.username, u.groups]),
    [
      ['bob', ['ops', 'dev']],
      ['carol', []],
    ],
  )
  assert.ok(!JSON.stringify(list).includes('scrypt'), 'no hashes in the listing')
  assert.equal(run(['remove', 'bob']).status, 0)
  assert.equal(run(['remove', 'bob']).status, 1)
})

test('rate limits (rate-limiter-flexible): past the per-client limit, 429 with Retry-After and the upstream is not reached', async () => {
  let reached = 0
  const origin = createServer((_req, res) => {
    reached++
    res.end('ok')
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  const gateway = await gatewayFor(
    `http://127.0.0.1:${(origin.address() as { port: number }).port}`,
    '5s',
    {
      rate_limits: {
        client: { points: 5, per: '1m' },
        credential: false,
        auth_endpoints: { points: 2, per: '1m' },
      },
      routes: [{ path: '/public/*', allow: 'anonymous' }],
    },
    { host: '127.0.0.1', port: 0 },
  )
  try {
    for (let i = 0; i < 5; i++) assert.equal((await fetch(`${gateway.url}/public/x`)).status, 200)
    const limited = await fetch(`${gateway.url}/public/x`, { headers: { accept: 'application/json' } })
    assert.equal(limited.status, 429)
    const retryAfter = Number(limited.headers.get('retry-after'))
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`)
    assert.equal((await limited.json()).error, 'rate_limited')
    assert.equal(reached, 5)
    // The offender, with its User-Agent, on the status page.
    await fetch(`${gateway.url}/public/x`, { headers: { 'user-agent': 'OldDesktop/1.2.3' } })
    const status = (await (await fetch(`${gateway.adminUrl}/status.json`)).json()) as {
      top_offenders: Array<{ userAgent: string; code: string; count: number }>
    }
    assert.ok(
      status.top_offenders.some(
        (o) => o.userAgent === 'OldDesktop/1.2.3' && o.code === 'rate_limited' && o.count === 1,
      ),
      JSON.stringify(status.top_offenders),
    )
  } finally {
    await gateway.close()
    origin.closeAllConnections()
    origin.close()
  }
})
