/**
 * bench/storm: good clients' success rate and p99 latency (1) with no storm, (2) with a storm and all
 * protections on, (3) with a storm and the configurable protections off (rate limits, shedding), and the
 * calls that reached the identity provider in each. Loopback only, bounded in time; the gateway runs
 * in a child process so the load does not share its event loop. Not a test.
 *
 *   node bench/storm.ts            (BENCH_SECONDS=5 per phase, BENCH_STORM_CLIENTS=64)
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, SignJWT } from 'jose'
import { Agent, request } from 'undici'
import { DEV_LIFETIMES } from '../src/cli/dev-config.ts'
import { systemClock } from '../src/core/clock.ts'
import { createSessionCodec } from '../src/core/session-codec.ts'
import { startFaultProxy } from '../test/helpers/fault-proxy.ts'
import { freePort, startRecordingUpstream } from '../test/helpers/net.ts'
import { startTestIdP } from '../test/helpers/test-idp.ts'

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5)
const STORM_CLIENTS = Number(process.env['BENCH_STORM_CLIENTS'] ?? 64)
const GOOD_CLIENTS = 4
const SECRET = 'storm-bench-session-secret-0123456789abcdefgh'

const proxyPort = await freePort()
const idp = await startTestIdP({
  redirectUris: ['http://127.0.0.1:1/oauth2/callback'],
  issuerOrigin: `http://127.0.0.1:${proxyPort}`,
})
const proxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: proxyPort })
const upstream = await startRecordingUpstream()
const now = Math.floor(Date.now() / 1000)
const codec = await createSessionCodec({
  secrets: [SECRET],
  cookieName: 'gatehouse',
  secure: false,
  clock: systemClock,
})
const [set] = await codec.write({
  sid: 'good',
  identity: { sub: 'good', user: 'good', groups: [] },
  signedInAt: now,
  expiresAt: now + 3600,
  maxExpiresAt: now + 7200,
  accessToken: 'at',
  accessTokenExpiresAt: now + 3600,
  refreshToken: 'rt',
})
const goodCookie = set!.split(';')[0]!
const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as { keys: Array<{ kid: string }> }
const { privateKey } = await generateKeyPair('RS256')
const badTokens: string[] = []
for (let i = 0; i < 500; i++) {
  badTokens.push(
    await new SignJWT({ sub: `old-client-${i}` })
      .setProtectedHeader({ alg: 'RS256', kid: jwks.keys[i % jwks.keys.length]!.kid })
      .setIssuer(idp.issuer)
      .setAudience(idp.clientId)
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .sign(privateKey),
  )
}

async function startGatewayChild(protections: boolean): Promise<{ url: string; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-storm-bench-'))
  const config = {
    public_url: 'http://127.0.0.1:1',
    upstream: upstream.url,
    data_dir: dir,
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'CS' } },
    session: { secrets: [{ env: 'SS' }] },
    lifetimes: DEV_LIFETIMES,
    admin: { host: '127.0.0.1', port: 0 },
    log: { level: 'info' }, // the start line carries the URL
    // Every client here shares 127.0.0.1: the per-address limit would refuse the good clients too, and
    // the good clients here send far more per session than a person does, so that limit is set high.
    rate_limits: protections
      ? { client: false, credential: { points: 1_000_000, per: 60 }, auth_endpoints: { points: 30, per: 60 } }
      : { client: false, credential: false, auth_endpoints: false },
    shedding: protections ? { max_event_loop_delay_ms: 100 } : false,
  }
  const file = join(dir, 'gatehouse.json')
  writeFileSync(file, JSON.stringify(config))
  const child = spawn(process.execPath, ['src/cli/main.ts', 'start', '--config', file], {
    env: { ...process.env, CS: idp.clientSecret, SS: SECRET },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d) => {
      out += d
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out)
      if (m) resolve(m[1]!)
    })
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}`)))
  })
  child.stdout!.resume()
  return { url, stop: () => child.kill('SIGKILL') }
}

async function phase(name: string, storm: boolean, protections: boolean) {
  const gateway = await startGatewayChild(protections)
  const agent = new Agent({ connections: STORM_CLIENTS + GOOD_CLIENTS + 4 })
  await new Promise((r) => setTimeout(r, 500)) // discovery and keys warm
  const providerBefore = proxy.count()
  const deadline = Date.now() + SECONDS * 1000
  const latencies: number[] = []
  let goodOk = 0
  let goodTotal = 0
  let stormSent = 0
  const get = async (path: string, headers: Record<string, string>) => {
    const r = await request(`${gateway.url}${path}`, { headers, dispatcher: agent })
    await r.body.dump()
    return r.statusCode
  }
  const stormLoops = storm
    ? Array.from({ length: STORM_CLIENTS }, async (_, c) => {
        while (Date.now() < deadline) {
          stormSent++
          await get('/api/sync', {
            authorization: `Bearer ${badTokens[(stormSent + c) % badTokens.length]}`,
          }).catch(() => 0)
        }
      })
    : []
  const goodLoops = Array.from({ length: GOOD_CLIENTS }, async () => {
    while (Date.now() < deadline) {
      const t = process.hrtime.bigint()
      const status = await get('/good', { cookie: goodCookie }).catch(() => 0)
      latencies.push(Number(process.hrtime.bigint() - t) / 1e6)
      goodTotal++
      if (status === 200) goodOk++
    }
  })
  await Promise.all([...stormLoops, ...goodLoops])
  latencies.sort((a, b) => a - b)
  const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? 0
  const row = {
    phase: name,
    good_success: `${((100 * goodOk) / Math.max(1, goodTotal)).toFixed(2)}%`,
    good_requests: goodTotal,
    good_p99_ms: p99.toFixed(1),
    storm_requests: stormSent,
    provider_calls: proxy.count() - providerBefore,
  }
  await agent.close()
  gateway.stop()
  return row
}

const rows = [
  await phase('no storm', false, true),
  await phase('storm, protections on', true, true),
  await phase('storm, protections off', true, false),
]
console.table(rows)
const base = Number(rows[0]!.good_p99_ms)
console.log(
  `good p99 with storm / without: on ${(Number(rows[1]!.good_p99_ms) / base).toFixed(2)}×, off ${(Number(rows[2]!.good_p99_ms) / base).toFixed(2)}×`,
)
await proxy.close()
await upstream.close()
await idp.close()
process.exit(0)
