/**
 * Many-instance drills (Gatehouse 6): Gatehouse processes on different ports sharing PostgreSQL and
 * Redis behave as one. PostgreSQL is reached through a TCP proxy the drill can cut, and Redis is a
 * private redis-server on a free port the drill can stop, so the shared services are never touched.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, fork, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import {
  dropSchema,
  POSTGRES_URL,
  postgresUnavailable,
  redisUnavailable,
  uniqueName,
} from '../helpers/shared-services.ts'
import { startTCPProxy, type TCPProxy } from '../helpers/tcp-proxy.ts'
import { signInAt, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const TOKEN_PATH = '/_idp/token'
const CHILD = new URL('./multi-instance-child.ts', import.meta.url).pathname

const skip = (await postgresUnavailable()) ?? (await redisUnavailable())

interface Instance {
  url: string
  child: ChildProcess
  call(cmd: string, args?: Record<string, unknown>): Promise<Record<string, unknown>>
  on(event: string, listener: (m: Record<string, unknown>) => void): void
}

async function startInstance(config: object, env: Record<string, string>): Promise<Instance> {
  const child = fork(CHILD, [], {
    env: { ...process.env, ...env, GH_DRILL_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const waiting = new Map<number, (m: Record<string, unknown>) => void>()
  const listeners = new Map<string, (m: Record<string, unknown>) => void>()
  let next = 0
  const ready = new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`instance exited with ${code} before it was ready`)))
    child.on('message', (m: Record<string, unknown>) => {
      if (m['ready']) resolve(String(m['url']))
      else if (typeof m['id'] === 'number') waiting.get(m['id'])?.(m)
      else if (typeof m['event'] === 'string') listeners.get(m['event'])?.(m)
    })
  })
  const url = await ready
  return {
    url,
    child,
    call(cmd, args = {}) {
      const id = next++
      return new Promise((resolve) => {
        waiting.set(id, resolve)
        child.send({ id, cmd, ...args })
      })
    },
    on(event, listener) {
      listeners.set(event, listener)
    },
  }
}

async function stop(instance: Instance | undefined): Promise<void> {
  if (instance === undefined || instance.child.exitCode !== null || instance.child.signalCode !== null) return
  const exited = new Promise((r) => instance.child.once('exit', r))
  instance.child.send({ id: -1, cmd: 'close' })
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
  instance.child.kill('SIGKILL')
}

function startRedis(port: number): Promise<ChildProcess> {
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('Ready to accept connections')) resolve(server)
    })
  })
}

/** Polls `check` every 10 ms until it holds; the elapsed ms, or fails after `withinMs`. */
async function within(withinMs: number, what: string, check: () => Promise<boolean>): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (await check()) return performance.now() - start
    if (performance.now() - start > withinMs) assert.fail(`${what}: not within ${withinMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

const bearer = (url: string, token: string, path = '/api') =>
  fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } }).then(async (r) => {
    await r.arrayBuffer()
    return r.status
  })

describe('multi-instance drills: PostgreSQL and Redis shared by several processes', { skip }, () => {
  const schema = uniqueName('gh_drill')
  const prefix = `${uniqueName('ghdrill')}:`
  let idp: TestIdP
  let idpProxy: FaultProxy
  let upstream: RecordingUpstream
  let pgProxy: TCPProxy
  let redisPort: number
  let redis: ChildProcess | undefined
  let a: Instance
  let b: Instance
  let config: Record<string, unknown>
  let env: Record<string, string>
  const figures: string[] = []

  before(async () => {
    const idpPort = await freePort()
    const portA = await freePort()
    const portB = await freePort()
    const base = `http://127.0.0.1:${portA}`
    idp = await startTestIdP({
      redirectUris: [`${base}/oauth2/callback`],
      issuerOrigin: `http://127.0.0.1:${idpPort}`,
      // Shorter than session.refresh_before: the first request after sign-in refreshes.
      accessTokenTtlSeconds: 60,
    })
    idpProxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: idpPort })
    upstream = await startRecordingUpstream()
    const pgUrl = new URL(POSTGRES_URL)
    pgProxy = await startTCPProxy({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) })
    pgUrl.port = String(pgProxy.port)
    redisPort = await freePort()
    redis = await startRedis(redisPort)
    env = { CS: idp.clientSecret, SS: 'drill-session-secret-0123456789abcdefghijkl', PG_URL: pgUrl.href }
    config = {
      public_url: base,
      upstream: upstream.url,
      listen: { host: '127.0.0.1', port: portA },
      provider: {
        issuer: idp.issuer,
        client_id: idp.clientId,
        client_secret: { env: 'CS' },
        scopes: ['openid', 'email', 'profile', 'offline_access'],
        timeout: 2,
      },
      session: { secrets: [{ env: 'SS' }] },
      lifetimes: DEV_LIFETIMES,
      rate_limits: { credential: { points: 10, per: 60 } },
      store: {
        postgres: { env: 'PG_URL' },
        schema,
        redis: `redis://127.0.0.1:${redisPort}`,
        redis_prefix: prefix,
      },
      shutdown: { drain: '1s' },
    }
    const instanceEnv = { ...env, GH_DRILL_RELOAD_MS: '500' }
    // Started together: the schema is migrated and the first keys made once.
    ;[a, b] = await Promise.all([
      startInstance({ ...config, data_dir: mkdtempSync(join(tmpdir(), 'gh-a-')) }, instanceEnv),
      startInstance(
        {
          ...config,
          data_dir: mkdtempSync(join(tmpdir(), 'gh-b-')),
          listen: { host: '127.0.0.1', port: portB },
        },
        instanceEnv,
      ),
    ])
  })

  after(async () => {
    await Promise.all([stop(a), stop(b)])
    redis?.kill('SIGKILL')
    await pgProxy?.close()
    await upstream?.close()
    await idpProxy?.close()
    await idp?.close()
    await dropSchema(schema).catch(() => {})
    if (figures.length > 0) process.stderr.write(`\nmulti-instance figures:\n  ${figures.join('\n  ')}\n`)
  })

  test('instances started together made one signing key and one next key', async () => {
    const keys = (await b.call('keys'))['keys'] as Array<{ state: string }>
    assert.deepEqual(keys.map((k) => k.state).sort(), ['current', 'next'])
  })

  test('a token revoked on A is refused on B within a second', async () => {
    const latencies: number[] = []
    for (let i = 0; i < 5; i++) {
      const { token, jti } = (await a.call('issue', { subject: `fanout-${i}` })) as {
        token: string
        jti: string
      }
      assert.equal(await bearer(b.url, token), 200, 'B verifies it first')
      const t0 = performance.now()
      const revoked = await a.call('revoke', { jti })
      assert.deepEqual(revoked['revoked'], [jti])
      await within(1000, 'B refuses the revoked token', async () => (await bearer(b.url, token)) === 401)
      latencies.push(performance.now() - t0)
    }
    figures.push(
      `revocation fan-out A→B: ${latencies.map((l) => l.toFixed(0)).join(', ')} ms (revoke call included)`,
    )
  })

  test('a rate limit that trips on A applies on B', async () => {
    const { token } = (await a.call('issue', { subject: 'rl-bot' })) as { token: string }
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) statuses.push(await bearer(a.url, token))
    for (let i = 0; i < 6; i++) statuses.push(await bearer(b.url, token))
    // credential: 10 per minute, counted once across both instances.
    assert.deepEqual(statuses, [...Array(10).fill(200), 429, 429])
  })

  test('a key rotation asked of both instances at once happens once', async () => {
    const before = (await a.call('keys'))['keys'] as Array<{ kid: string; state: string }>
    const next = before.find((k) => k.state === 'next')!.kid
    const [ra, rb] = await Promise.all([a.call('rotate'), b.call('rotate')])
    assert.equal(ra['error'], undefined)
    assert.equal(rb['error'], undefined)
    const after = (await b.call('keys'))['keys'] as Array<{ kid: string; state: string }>
    assert.deepEqual(after.map((k) => k.state).sort(), ['current', 'next', 'retired'])
    assert.equal(after.find((k) => k.state === 'current')!.kid, next)
    const joined = [ra, rb].filter((r) => String(r['changes']).includes('rotated by another instance'))
    assert.equal(joined.length, 1)
  })

  test("a session's refresh hit on both instances at once calls the provider once", async () => {
    const { browser } = await signInAt(`${a.url}/`, idp.issuer)
    const cookie = browser
      .cookies(`${a.url}/`)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    const before = idpProxy.count(TOKEN_PATH)
    const hit = (url: string) =>
      fetch(`${url}/page`, { headers: { cookie }, redirect: 'manual' }).then(async (r) => {
        await r.arrayBuffer()
        return r.status
      })
    const statuses = await Promise.all([hit(a.url), hit(b.url), hit(a.url), hit(b.url)])
    assert.deepEqual(statuses, [200, 200, 200, 200])
    assert.equal(idpProxy.count(TOKEN_PATH) - before, 1, 'one refresh at the provider')
  })

  test('kill -9 in the middle of issuing tokens: nothing half-written, the other instance keeps serving', async () => {
    const c = await startInstance(
      { ...config, data_dir: mkdtempSync(join(tmpdir(), 'gh-c-')), listen: { host: '127.0.0.1', port: 0 } },
      env,
    )
    const issued: Array<{ token: string; jti: string }> = []
    c.on('issued', (m) => issued.push({ token: String(m['token']), jti: String(m['jti']) }))
    await c.call('issue-loop')
    await within(10_000, 'C issues tokens', async () => issued.length >= 20)
    const exited = new Promise((r) => c.child.once('exit', r))
    c.child.kill('SIGKILL')
    await exited
    const db = new pg.Client({ connectionString: POSTGRES_URL })
    await db.connect()
    const { rows } = await db.query(
      `SELECT jti, subject, scopes, audience, issued_at, expires_at FROM "${schema}".gh_tokens WHERE subject LIKE 'loop-%'`,
    )
    await db.end()
    // Every token C handed out is stored; at most the one in flight is stored without having been handed out.
    const stored = new Set(rows.map((r) => r.jti))
    for (const t of issued) assert.ok(stored.has(t.jti), `token ${t.jti} stored`)
    assert.ok(rows.length - issued.length <= 1, `${rows.length} rows for ${issued.length} issued`)
    for (const r of rows) {
      assert.ok(Array.isArray(r.scopes) && r.audience && Number(r.expires_at) > Number(r.issued_at))
    }
    assert.equal(await bearer(b.url, issued[0]!.token), 200)
    assert.equal(await bearer(b.url, issued.at(-1)!.token), 200)
  })

  test('Redis, then PostgreSQL, go away and come back with traffic running: verifying never stops, no revocation is lost', async () => {
    // Many clients, each well under the credential limit (10 a minute) even when counted per instance.
    const steady: string[] = []
    for (let i = 0; i < 40; i++) {
      steady.push(((await a.call('issue', { subject: `steady-${i}` })) as { token: string }).token)
    }
    let refused = 0
    let served = 0
    let running = true
    const traffic = (async () => {
      for (let i = 0; running; i++) {
        for (const url of [a.url, b.url]) {
          if ((await bearer(url, steady[i % steady.length]!, '/traffic')) === 200) served++
          else refused++
        }
        await new Promise((r) => setTimeout(r, 40))
      }
    })()

    // Redis down: limits go local, revocations still reach B through its reload of the store.
    redis!.kill('SIGKILL')
    redis = undefined
    const r1 = (await a.call('issue', { subject: 'during-redis-outage' })) as { token: string; jti: string }
    assert.equal(await bearer(b.url, r1.token), 200)
    await a.call('revoke', { jti: r1.jti })
    const byPolling = await within(3000, 'B refuses a token revoked while Redis is down', async () => {
      return (await bearer(b.url, r1.token)) === 401
    })
    figures.push(`revocation A→B with Redis down (reload every 500 ms): ${byPolling.toFixed(0)} ms`)
    const metrics = String((await b.call('metrics'))['text'])
    assert.match(metrics, /gatehouse_redis_up 0/)
    assert.match(metrics, /gatehouse_redis_fallback_total\{kind="rate_limit"\} [1-9]/)

    // PostgreSQL down too: verifying goes on from memory, writes are refused with a stable code.
    pgProxy.cut()
    const refusedIssue = await a.call('issue', { subject: 'during-pg-outage' })
    assert.equal(refusedIssue['error'], 'ERR_STORE_UNAVAILABLE')
    await new Promise((r) => setTimeout(r, 1200)) // a few reload rounds fail meanwhile
    assert.equal(await bearer(b.url, r1.token), 401, 'a revocation is not forgotten while the store is down')

    // Both back: writes work again, and fan-out through Redis resumes.
    pgProxy.restore()
    redis = await startRedis(redisPort)
    let r2 = { token: '', jti: '' }
    await within(5000, 'issuing works again', async () => {
      const r = await a.call('issue', { subject: 'after-outage' })
      if (r['error'] !== undefined) return false
      r2 = r as typeof r2
      return true
    })
    await within(5000, 'A and B reconnected to Redis', async () => {
      const [ma, mb] = await Promise.all([a.call('metrics'), b.call('metrics')])
      return (
        /gatehouse_redis_up 1/.test(String(ma['text'])) && /gatehouse_redis_up 1/.test(String(mb['text']))
      )
    })
    assert.equal(await bearer(b.url, r2.token), 200)
    await a.call('revoke', { jti: r2.jti })
    await within(
      1000,
      'B refuses a token revoked after the outage',
      async () => (await bearer(b.url, r2.token)) === 401,
    )
    assert.equal(await bearer(a.url, r1.token), 401)

    running = false
    await traffic
    assert.ok(served > 20, `${served} requests served`)
    assert.equal(refused, 0, 'no valid token was ever refused')
    figures.push(`outage traffic: ${served} requests served, ${refused} refused`)
  })
})
