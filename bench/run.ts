/**
 * Throughput and latency of each target against the same origin, measured in one run so that ratios are
 * comparable (absolute numbers drift ±15–30% between runs on shared machines).
 *
 * Usage: `node bench/run.ts` (BENCH_ROUNDS=3, BENCH_SECONDS=10, BENCH_WARMUP_SECONDS=2, BENCH_CONNECTIONS=64,
 * BENCH_THREADS=2, BENCH_COOKIE_BYTES=3072). Runs the origin alone, the bare proxy, and the target exported by
 * `bench/gatehouse-target.ts` when that file exists. Every request to every target carries a Cookie header of
 * the same size (~3 KB: Gatehouse's session cookie plus filler, or filler alone).
 * Load comes from wrk (`-t2 -c64 --latency`); autocannon is used only when wrk is missing.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** What every target is given: the origin it should forward to and the Cookie header the load will carry. */
export interface BenchContext {
  /** The benchmark origin (bench/origin.ts), already listening; one for the whole run. */
  originUrl: string
  /** The ~1 KB Cookie header value sent when the target does not bring its own `cookie`. */
  cookie: string
}

/** A target once started. */
export interface RunningTarget {
  /** URL the load generator requests. */
  url: string
  /**
   * Extra request headers, e.g. `{ cookie: '__Host-gatehouse=…' }`. A `cookie` here is sent first, followed
   * by filler cookies up to ~1 KB in all.
   */
  headers?: Record<string, string>
  /** Process whose CPU time is reported as µs per request (Linux only). */
  pid?: number
  stop(): Promise<void>
}

/** Something to benchmark: started before its measurement, stopped right after. */
export interface BenchTarget {
  name: string
  start(ctx: BenchContext): Promise<RunningTarget>
}

/** One target's figures. */
export interface BenchResult {
  name: string
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  /** Responses other than 2xx/3xx. A run with any is not a fair measurement. */
  non2xx: number
  /** Connect, read, write and timeout errors reported by the load generator. */
  socketErrors: number
  /** CPU time of the target's process per request, in µs, when its pid is known. */
  cpuMicrosPerRequest?: number
}

/** Options of {@link runBench}. */
export interface RunBenchOptions {
  /** Measured seconds per target. Default: BENCH_SECONDS or 10. */
  seconds?: number
  /** Unmeasured seconds before each measurement (JIT, pools). Default: BENCH_WARMUP_SECONDS or 2. */
  warmupSeconds?: number
  /** Concurrent connections. Default: BENCH_CONNECTIONS or 64. */
  connections?: number
  /** wrk threads. Default: BENCH_THREADS or 2. */
  threads?: number
  /** Where progress lines go. Default: stderr. */
  log?: (line: string) => void
}

const here = fileURLToPath(new URL('.', import.meta.url))

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0)
    throw new TypeError(`${name} must be a positive number, got ${raw}`)
  return value
}

/** Filler cookies, as a browser collects from analytics and preferences; `prefix` comes first. */
export function benchCookie(prefix = '', totalBytes = 1024): string {
  const parts = prefix === '' ? [] : [prefix]
  let length = prefix.length
  for (let i = 0; length < totalBytes; i++) {
    const part = `_pref${i}=${'0123456789abcdef'.repeat(4)}`
    parts.push(part)
    length += part.length + 2
  }
  return parts.join('; ')
}

/** A running child process that printed `… listening <url>`. */
export interface StartedChild {
  url: string
  pid: number
  stop(): Promise<void>
}

const live = new Set<ChildProcess>()

/**
 * Spawns `node <script> ...args` with BENCH_CHILD=1 and waits for the line `… listening http://…`.
 * The child stops when `stop()` is called or when this process exits (its stdin closes).
 *
 * @example
 * ```ts
 * const child = await startChild(new URL('./bare-proxy.ts', import.meta.url).pathname, [ctx.originUrl])
 * ```
 */
export function startChild(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<StartedChild> {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env, BENCH_CHILD: '1' },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  live.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  exited.then(() => live.delete(child))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }
  return new Promise((resolve, reject) => {
    let buffered = ''
    const timer = setTimeout(() => {
      void stop()
      reject(new Error(`${script} did not print its URL within ${timeoutMs} ms`))
    }, timeoutMs)
    const onData = (data: Buffer) => {
      buffered += data.toString()
      const match = /listening (http:\/\/\S+)/.exec(buffered)
      if (match === null) return
      clearTimeout(timer)
      child.stdout!.off('data', onData)
      child.stdout!.resume()
      resolve({ url: match[1]!, pid: child.pid!, stop })
    }
    child.stdout!.on('data', onData)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${script} exited before listening (code ${code}, signal ${signal})`))
    })
  })
}

function killAll(): void {
  for (const child of live) child.kill('SIGKILL')
}
process.once('exit', killAll)

let originPid: number | undefined

/** The origin alone: the ceiling every proxy is compared with. */
export const originTarget: BenchTarget = {
  name: 'origin',
  async start(ctx) {
    return { url: ctx.originUrl, pid: originPid, stop: async () => {} }
  },
}

/** A reverse proxy with no checks, forwarding exactly as Gatehouse does. */
export const bareProxyTarget: BenchTarget = {
  name: 'bare-proxy',
  async start(ctx) {
    const child = await startChild(`${here}bare-proxy.ts`, [ctx.originUrl])
    return { url: `${child.url}/`, pid: child.pid, stop: child.stop }
  },
}

export const defaultTargets: BenchTarget[] = [originTarget, bareProxyTarget]

function clockTicksPerSecond(): number {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const ticks = Number(out.stdout?.trim())
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100
}

// utime + stime of a process in clock ticks, from /proc/<pid>/stat (fields 14 and 15).
function cpuTicks(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return undefined
  }
}

type LoadTool = 'wrk' | 'autocannon'

function findLoadTool(): LoadTool | undefined {
  if (spawnSync('wrk', ['--version']).error === undefined) return 'wrk'
  if (spawnSync('autocannon', ['--version']).error === undefined) return 'autocannon'
  return undefined
}

interface LoadResult {
  requestsPerSecond: number
  p50Ms: number
  p99Ms: number
  requests: number
  non2xx: number
  socketErrors: number
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    child.once('error', reject)
    child.once('exit', (code) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${command} exited with ${code}: ${err.trim() || out.trim()}`))
    })
  })
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 }

function wrkDuration(text: string, label: string): number {
  const match = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
  if (match === null) throw new Error(`wrk output has no ${label} line:\n${text}`)
  return Number(match[1]) * UNIT_MS[match[2]!]!
}

/** Parses `wrk --latency` output. Exported for tests of the harness itself. */
export function parseWrk(text: string): LoadResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text)
  const total = /^\s*(\d+) requests in /m.exec(text)
  if (rps === null || total === null) throw new Error(`unexpected wrk output:\n${text}`)
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text)
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  return {
    requestsPerSecond: Number(rps[1]),
    p50Ms: wrkDuration(text, '50%'),
    p99Ms: wrkDuration(text, '99%'),
    requests: Number(total[1]),
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
    socketErrors: errors === null ? 0 : errors.slice(1).reduce((sum, n) => sum + Number(n), 0),
  }
}

async function load(
  tool: LoadTool,
  url: string,
  headers: Record<string, string>,
  seconds: number,
  connections: number,
  threads: number,
): Promise<LoadResult> {
  if (tool === 'wrk') {
    const args = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency']
    for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`)
    return parseWrk(await run('wrk', [...args, url]))
  }
  const args = ['-j', '-c', String(connections), '-d', String(seconds)]
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}=${value}`)
  const json = JSON.parse(await run('autocannon', [...args, url])) as {
    requests: { average: number; total: number }
    latency: { p50: number; p99: number }
    non2xx: number
    errors: number
    timeouts: number
  }
  return {
    requestsPerSecond: json.requests.average,
    p50Ms: json.latency.p50,
    p99Ms: json.latency.p99,
    requests: json.requests.total,
    non2xx: json.non2xx,
    socketErrors: json.errors + json.timeouts,
  }
}

/**
 * Starts the origin, then benchmarks each target in turn (start, warm up, measure, stop) and returns the
 * figures. Targets named `origin` and `bare-proxy` serve as baselines in {@link formatResults}.
 *
 * @example
 * ```ts
 * const results = await runBench([...defaultTargets, myTarget], { seconds: 5 })
 * console.log(formatResults(results))
 * ```
 */
export async function runBench(
  targets: BenchTarget[],
  options: RunBenchOptions = {},
): Promise<BenchResult[]> {
  const seconds = options.seconds ?? envNumber('BENCH_SECONDS', 10)
  const warmupSeconds = options.warmupSeconds ?? envNumber('BENCH_WARMUP_SECONDS', 2)
  const connections = options.connections ?? envNumber('BENCH_CONNECTIONS', 64)
  const threads = options.threads ?? envNumber('BENCH_THREADS', 2)
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const tool = findLoadTool()
  if (tool === undefined) {
    throw new Error(
      'neither wrk nor autocannon is installed: install wrk (apt-get install wrk) or autocannon',
    )
  }
  if (tool === 'autocannon') log('wrk not found: using autocannon (figures are not comparable with wrk runs)')
  const ticksPerSecond = clockTicksPerSecond()

  const origin = await startChild(`${here}origin.ts`)
  originPid = origin.pid
  // Every target gets a Cookie header of the same size: Gatehouse's real session cookie (~2.3 KB with
  // realistic tokens) plus filler, or filler alone, so no target parses fewer bytes than another.
  const cookieBytes = envNumber('BENCH_COOKIE_BYTES', 3072)
  const ctx: BenchContext = { originUrl: `${origin.url}/`, cookie: benchCookie('', cookieBytes) }
  const results: BenchResult[] = []
  try {
    for (const target of targets) {
      log(`${target.name}: starting`)
      const running = await target.start(ctx)
      try {
        const { cookie, ...rest } = running.headers ?? {}
        const headers = {
          ...rest,
          cookie: cookie === undefined ? ctx.cookie : benchCookie(cookie, cookieBytes),
        }
        log(`${target.name}: warming up ${warmupSeconds}s, then measuring ${seconds}s at ${running.url}`)
        await load(tool, running.url, headers, warmupSeconds, connections, threads)
        const cpuBefore = cpuTicks(running.pid)
        const result = await load(tool, running.url, headers, seconds, connections, threads)
        const cpuAfter = cpuTicks(running.pid)
        const entry: BenchResult = {
          name: target.name,
          requestsPerSecond: result.requestsPerSecond,
          p50Ms: result.p50Ms,
          p99Ms: result.p99Ms,
          non2xx: result.non2xx,
          socketErrors: result.socketErrors,
        }
        if (cpuBefore !== undefined && cpuAfter !== undefined && result.requests > 0) {
          entry.cpuMicrosPerRequest = (((cpuAfter - cpuBefore) / ticksPerSecond) * 1e6) / result.requests
        }
        results.push(entry)
      } finally {
        await running.stop()
      }
    }
  } finally {
    await origin.stop()
  }
  return results
}

function ratio(value: number, base: BenchResult | undefined): string {
  return base === undefined || base.requestsPerSecond === 0 ? '' : (value / base.requestsPerSecond).toFixed(2)
}

/** A plain-text table of the results with req/s ratios to `origin` and `bare-proxy` when they were measured. */
export function formatResults(results: BenchResult[]): string {
  const origin = results.find((r) => r.name === 'origin')
  const bare = results.find((r) => r.name === 'bare-proxy')
  const rows = [
    ['target', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/req', '/origin', '/bare-proxy', 'non-2xx', 'errors'],
  ]
  for (const r of results) {
    rows.push([
      r.name,
      r.requestsPerSecond.toFixed(0),
      r.p50Ms.toFixed(2),
      r.p99Ms.toFixed(2),
      r.cpuMicrosPerRequest === undefined ? '' : r.cpuMicrosPerRequest.toFixed(0),
      ratio(r.requestsPerSecond, origin),
      ratio(r.requestsPerSecond, bare),
      String(r.non2xx),
      String(r.socketErrors),
    ])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  const line = (row: string[]) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ')
  const out = rows.map(line)
  out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '))
  const suspect = results.filter((r) => r.non2xx > 0 || r.socketErrors > 0).map((r) => r.name)
  if (suspect.length > 0)
    out.push('', `warning: errors or non-2xx responses in ${suspect.join(', ')}: not a fair run`)
  return out.join('\n')
}

async function main(): Promise<void> {
  const targets = [...defaultTargets]
  const extra = `${here}gatehouse-target.ts`
  if (existsSync(extra)) {
    const mod = (await import(extra)) as {
      default?: BenchTarget
      target?: BenchTarget
      targets?: BenchTarget[]
    }
    const more = mod.targets ?? [mod.default ?? mod.target].filter((t) => t !== undefined)
    if (more.length === 0) throw new Error(`${extra} exports no 'targets', default or 'target' BenchTarget`)
    targets.push(...more)
  }
  // Shared machines drift by ±15–30% between runs: measure every target in several interleaved rounds
  // and report the median of each figure.
  const rounds = envNumber('BENCH_ROUNDS', 3)
  const all: BenchResult[][] = []
  for (let round = 1; round <= rounds; round++) {
    const results = await runBench(targets)
    process.stdout.write(`round ${round} of ${rounds}\n${formatResults(results)}\n\n`)
    all.push(results)
  }
  process.stdout.write(`median of ${rounds} rounds\n${formatResults(medianResults(all))}\n`)
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Per target, the median of each figure over several rounds (errors are summed, not averaged away). */
export function medianResults(rounds: BenchResult[][]): BenchResult[] {
  const names = rounds[0]?.map((r) => r.name) ?? []
  return names.map((name) => {
    const runs = rounds.map((round) => round.find((r) => r.name === name)).filter((r) => r !== undefined)
    const cpu = runs.map((r) => r.cpuMicrosPerRequest).filter((v) => v !== undefined)
    const out: BenchResult = {
      name,
      requestsPerSecond: median(runs.map((r) => r.requestsPerSecond)),
      p50Ms: median(runs.map((r) => r.p50Ms)),
      p99Ms: median(runs.map((r) => r.p99Ms)),
      non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
      socketErrors: runs.reduce((n, r) => n + r.socketErrors, 0),
    }
    if (cpu.length > 0) out.cpuMicrosPerRequest = median(cpu)
    return out
  })
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.once('SIGINT', () => {
    killAll()
    process.exit(130)
  })
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
    killAll()
    process.exit(1)
  })
}
