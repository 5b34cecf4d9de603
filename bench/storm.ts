/**
 * bench/storm: good clients' success rate and p99 latency (1) with no storm, (2) with a storm and all
 * protections on, (3) with a storm and the configurable protections off (rate limits, repeat penalty,
 * shedding), and the calls that reached the identity provider in each. Loopback only, bounded in time.
 * The gateway runs in a child process; the storm is wrk (another process, written in C, so the storm
 * runs at the machine's full speed and does not share the good clients' event loop); the good clients
 * are this process. Not a test.
 *
 *   node bench/storm.ts            (BENCH_SECONDS=5 per phase, BENCH_STORM_CLIENTS=64 connections)
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, SignJWT } from 'jose'
import { Agent, request } from 'undici'
import { DEV_LIFETIMES } from '../src/cli/dev-config.ts'
import { startFaultProxy } from '../test/helpers/fault-proxy.ts'
import { freePort, startRecordingUpstream } from '../test/helpers/net.ts'
import { sessionCookie } from '../test/helpers/session.ts'
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
const goodCookie = await sessionCookie(SECRET, { sid: 'good' })
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
      : { client: false, credential: false, auth_endpoints: false, repeat_penalty: false },
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

if (spawnSync('wrk', ['--version']).error !== undefined) {
  console.error('bench/storm needs wrk (apt-get install -y wrk)')
  process.exit(2)
}
const stormDir = mkdtempSync(join(tmpdir(), 'gh-storm-wrk-'))
writeFileSync(join(stormDir, 'tokens.txt'), `${badTokens.join('\n')}\n`)
// Old desktop clients: each connection sends the next expired token the moment it has an answer.
const stormScript = join(stormDir, 'storm.lua')
writeFileSync(
  stormScript,
  `local tokens = {}
for line in io.lines("${join(stormDir, 'tokens.txt')}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/sync", {
    ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1],
    ["User-Agent"] = "OldDesktop/1.2.3",
  })
end
`,
)

/** wrk in its own process; resolves with the requests it sent and the statuses it did not like. */
function startStorm(url: string): Promise<{ requests: number; non2xx: number }> {
  return new Promise((resolve, reject) => {
    const wrk = spawn(
      'wrk',
      [
        '-t2',
        `-c${STORM_CLIENTS}`,
        `-d${SECONDS}s`,
        '--timeout',
        '10s',
        '-s',
        stormScript,
        `${url}/api/sync`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    wrk.stdout.on('data', (d) => (out += d))
    wrk.once('error', reject)
    wrk.once('exit', () => {
      resolve({
        requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
        non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
      })
    })
  })
}

async function phase(name: string, storm: boolean, protections: boolean) {
  const gateway = await startGatewayChild(protections)
  const agent = new Agent({ connections: GOOD_CLIENTS + 4 })
  await new Promise((r) => setTimeout(r, 500)) // discovery and keys warm
  const get = async (path: string, headers: Record<string, string>) => {
    const r = await request(`${gateway.url}${path}`, { headers, dispatcher: agent })
    await r.body.dump()
    return r.statusCode
  }
  // A fresh process: let its JIT warm up on the good path before anything is measured.
  for (let i = 0; i < 2000; i++) await get('/warm', { cookie: goodCookie })
  const providerBefore = proxy.count()
  const stormRun = storm ? startStorm(gateway.url) : Promise.resolve({ requests: 0, non2xx: 0 })
  if (storm) await new Promise((r) => setTimeout(r, 300)) // the storm is at full speed before measuring
  const deadline = Date.now() + (SECONDS - (storm ? 0.6 : 0)) * 1000
  const latencies: number[] = []
  let goodOk = 0
  let goodTotal = 0
  const goodLoops = Array.from({ length: GOOD_CLIENTS }, async () => {
    while (Date.now() < deadline) {
      const t = process.hrtime.bigint()
      const status = await get('/good', { cookie: goodCookie }).catch(() => 0)
      latencies.push(Number(process.hrtime.bigint() - t) / 1e6)
      goodTotal++
      if (status === 200) goodOk++
    }
  })
  await Promise.all(goodLoops)
  const stormResult = await stormRun
  latencies.sort((a, b) => a - b)
  const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? 0
  const row = {
    phase: name,
    good_success: `${((100 * goodOk) / Math.max(1, goodTotal)).toFixed(2)}%`,
    good_requests: goodTotal,
    good_p50_ms: (latencies[Math.floor(latencies.length * 0.5)] ?? 0).toFixed(2),
    good_p99_ms: p99.toFixed(2),
    storm_requests: stormResult.requests,
    storm_refused: stormResult.non2xx,
    provider_calls: proxy.count() - providerBefore,
  }
  await agent.close()
  gateway.stop()
  return row
}

// Rounds interleave the phases, so a drift of the machine shows in every phase alike; ratios are
// taken within a round, then the median across rounds is reported.
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 1)
const rows = []
const ratios: Array<{ on: number; off: number }> = []
for (let round = 1; round <= ROUNDS; round++) {
  const r = [
    await phase('no storm', false, true),
    await phase('storm, protections on', true, true),
    await phase('storm, protections off', true, false),
  ]
  rows.push(...r.map((row) => ({ round, ...row })))
  const base = Number(r[0]!.good_p99_ms)
  ratios.push({ on: Number(r[1]!.good_p99_ms) / base, off: Number(r[2]!.good_p99_ms) / base })
}
console.table(rows)
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log(
  `good p99 with storm / without (median of ${ROUNDS}): protections on ${median(ratios.map((r) => r.on)).toFixed(2)}×, off ${median(ratios.map((r) => r.off)).toFixed(2)}×; per round: ${ratios.map((r) => `${r.on.toFixed(2)}/${r.off.toFixed(2)}`).join(', ')}`,
)
await proxy.close()
await upstream.close()
await idp.close()
process.exit(0)
