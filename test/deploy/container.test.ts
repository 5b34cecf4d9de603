/**
 * The container image, without a container engine (none can pull a base image here): the Dockerfile's
 * structure is checked (two stages, non-root numeric USER, HEALTHCHECK, no secret in ENV or ARG, the
 * entry command), the build stage's COPY list and RUN lines are replayed in an empty folder (so a file
 * the build needs but the Dockerfile does not copy fails here), the runtime stage's install line is run
 * against that tarball with a temporary global prefix, and the image's exact ENTRYPOINT + CMD is started
 * with a mounted-style config, secrets from the environment and data in a temporary /data, then probed
 * with the HEALTHCHECK's own command.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { freePort } from '../helpers/net.ts'
import { REPO_ROOT, run, shown, userEnv } from '../helpers/pack.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

interface Instruction {
  op: string
  args: string
}

/** Dockerfile instructions by stage: continuation lines joined, comments and the parser directive dropped. */
function parseDockerfile(text: string): {
  preamble: Instruction[]
  stages: Array<{ from: string; name: string; steps: Instruction[] }>
} {
  const lines = text.replace(/\s*\\\n\s*/g, ' ').split('\n')
  const preamble: Instruction[] = []
  const stages: Array<{ from: string; name: string; steps: Instruction[] }> = []
  for (const raw of lines) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line)
    assert.ok(m, `not an instruction: ${line}`)
    const op = m[1]!.toUpperCase()
    const args = m[2]!.trim()
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)
      assert.ok(f, `FROM ${args}`)
      stages.push({ from: f[1]!, name: f[2] ?? String(stages.length), steps: [] })
    } else if (stages.length === 0) preamble.push({ op, args })
    else stages.at(-1)!.steps.push({ op, args })
  }
  return { preamble, stages }
}

const DOCKERFILE = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8')
const { preamble, stages } = parseDockerfile(DOCKERFILE)
const build = stages.find((s) => s.name === 'build')!
const runtime = stages.at(-1)!
const exec = (op: string) => JSON.parse(runtime.steps.find((s) => s.op === op)!.args) as string[]
const runs = (stage: typeof build) => stage.steps.filter((s) => s.op === 'RUN').map((s) => s.args)

const CLIENT_SECRET_ENV = 'GATEHOUSE_CLIENT_SECRET'
const SESSION_SECRET_ENV = 'GATEHOUSE_SESSION_SECRET'

// The Dockerfile's own placeholder, as written there.
const NODE_IMAGE_ARG = '$' + '{NODE_IMAGE}'

describe('Dockerfile structure', () => {
  test('a build stage and a runtime stage on the same Node image', () => {
    assert.deepEqual(
      stages.map((s) => [s.name, s.from]),
      [
        ['build', NODE_IMAGE_ARG],
        ['runtime', NODE_IMAGE_ARG],
      ],
    )
    assert.ok(preamble.some((i) => i.op === 'ARG' && i.args === 'NODE_IMAGE=node:24-slim'))
    assert.ok(
      runs(build).some((r) => r.startsWith('npm ci ')),
      'the build installs with npm ci',
    )
    assert.ok(
      runtime.steps.some((s) => s.op === 'COPY' && s.args.startsWith('--from=build ')),
      'the runtime takes only the build stage output',
    )
    assert.ok(runs(runtime).some((r) => /npm install --global --omit=dev .*\.tgz/.test(r)))
  })

  test('runs as a numeric non-root user, with a health check, entry command and ports', () => {
    const users = runtime.steps.filter((s) => s.op === 'USER').map((s) => s.args)
    assert.equal(users.length, 1)
    const [uid, gid] = users[0]!.split(':').map(Number)
    // Numeric, so Kubernetes' runAsNonRoot can verify it.
    assert.ok(Number.isInteger(uid) && uid! > 0 && Number.isInteger(gid) && gid! > 0, users[0])
    const last = runtime.steps.findLast((s) => s.op === 'USER' || s.op === 'RUN')
    assert.equal(last?.op, 'USER', 'nothing runs as root after USER')
    const health = runtime.steps.find((s) => s.op === 'HEALTHCHECK')
    assert.ok(health, 'HEALTHCHECK')
    assert.match(health.args, /^--interval=\S+ --timeout=\S+ --start-period=\S+ --retries=\d+ CMD \[/)
    assert.deepEqual(exec('ENTRYPOINT'), ['gatehouse'])
    assert.deepEqual(exec('CMD'), ['start', '--config', '/etc/gatehouse/gatehouse.yaml'])
    const exposed = runtime.steps.filter((s) => s.op === 'EXPOSE').flatMap((s) => s.args.split(/\s+/))
    assert.deepEqual(exposed.sort(), ['8080', '9090'])
    assert.ok(runtime.steps.some((s) => s.op === 'VOLUME' && s.args === '["/data"]'))
  })

  test('no secret is baked into ENV or ARG', () => {
    const vars = [...preamble, ...stages.flatMap((s) => s.steps)]
      .filter((i) => i.op === 'ENV' || i.op === 'ARG')
      .flatMap((i) => i.args.split(/\s+(?=[A-Za-z_][A-Za-z0-9_]*=)/).map((kv) => kv.split('=')[0]!))
    assert.deepEqual(
      vars.filter((name) => /secret|password|passwd|token|private|credential|_key$/i.test(name)),
      [],
    )
  })

  test('.dockerignore keeps local state, installs and build output out of the context', () => {
    const ignored = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n')
    for (const p of ['.git', 'node_modules', 'dist', '.gatehouse']) assert.ok(ignored.includes(p), p)
  })
})

describe('the image entry command, run as the runtime stage installs it', () => {
  let dir: string
  let prefix: string
  let idp: TestIdP

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-container-'))
    // The build stage: its COPY sources (from the context, less .dockerignore) and its RUN lines, in order.
    const context = join(dir, 'src')
    mkdirSync(context)
    for (const step of build.steps) {
      if (step.op === 'COPY') {
        const parts = step.args.split(/\s+/)
        for (const source of parts.slice(0, -1)) {
          cpSync(join(REPO_ROOT, source), join(context, source), { recursive: true })
        }
      } else if (step.op === 'RUN') {
        const r = await run('sh', ['-c', step.args], { cwd: context, timeoutMs: 300_000 })
        assert.equal(r.status, 0, `RUN ${step.args}\n${shown(r)}`)
      }
    }
    const packed = join(context, 'pkg')
    assert.equal(readdirSync(packed).filter((f) => f.endsWith('.tgz')).length, 1)
    // The runtime stage's install line, with /tmp/pkg where COPY --from=build put the tarball and the
    // global prefix in the temporary folder instead of /usr/local.
    prefix = join(dir, 'usr-local')
    const install = runs(runtime).find((r) => r.startsWith('npm install --global'))!
    const r = await run('sh', ['-c', install.replaceAll('/tmp/pkg', packed).replace(/ && rm -rf .*$/, '')], {
      cwd: dir,
      env: userEnv({ npm_config_prefix: prefix }),
      timeoutMs: 300_000,
    })
    assert.equal(r.status, 0, shown(r))
    idp = await startTestIdP({ redirectUris: ['https://app.example.com/oauth2/callback'] })
  })

  after(async () => {
    await idp?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('only production dependencies are installed', () => {
    const modules = join(prefix, 'lib/node_modules/gatehouse/node_modules')
    for (const dev of ['typescript', '@biomejs', 'fast-check', 'playwright-core']) {
      assert.ok(!existsSync(join(modules, dev)), `${dev} is not installed`)
    }
    assert.ok(existsSync(join(modules, 'jose')) || existsSync(join(prefix, 'lib/node_modules/jose')))
  })

  test('ENTRYPOINT + CMD serve with a mounted config and env secrets; the HEALTHCHECK command passes', async () => {
    const etc = join(dir, 'etc/gatehouse')
    const data = join(dir, 'data')
    mkdirSync(etc, { recursive: true })
    mkdirSync(data)
    const [port, adminPort] = [await freePort(), await freePort()]
    const configFile = join(etc, 'gatehouse.yaml')
    writeFileSync(
      configFile,
      `public_url: https://app.example.com
upstream: http://127.0.0.1:3000
data_dir: ${data}
listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
provider:
  issuer: ${idp.issuer}
  client_id: ${idp.clientId}
  client_secret: { env: ${CLIENT_SECRET_ENV} }
session:
  secrets: [{ env: ${SESSION_SECRET_ENV} }]
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 7d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
`,
    )
    const [entry] = exec('ENTRYPOINT')
    const cmd = exec('CMD').map((a) => (a === '/etc/gatehouse/gatehouse.yaml' ? configFile : a))
    const imageEnv = Object.fromEntries(
      runtime.steps
        .filter((s) => s.op === 'ENV')
        .map((s) => s.args.split('=', 2) as [string, string])
        .map(([k, v]) => [k, k === 'GATEHOUSE_HEALTH_URL' ? v.replace(':9090', `:${adminPort}`) : v]),
    )
    const env = userEnv({
      ...imageEnv,
      PATH: `${join(prefix, 'bin')}:${userEnv().PATH}`,
      [CLIENT_SECRET_ENV]: idp.clientSecret,
      [SESSION_SECRET_ENV]: 'container-test-session-secret-0123456789abcdef',
    })
    const health = runtime.steps.find((s) => s.op === 'HEALTHCHECK')!.args
    const probe = JSON.parse(health.slice(health.indexOf('CMD ') + 4)) as string[]
    const check = () => run(probe[0]!, probe.slice(1), { cwd: data, env, timeoutMs: 10_000 })

    const child = spawn(entry!, cmd, { cwd: data, env })
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    try {
      let ok = false
      for (let i = 0; i < 100 && !ok; i++) {
        ok = (await check()).status === 0
        if (!ok) await new Promise((r) => setTimeout(r, 100))
      }
      assert.ok(ok, `the HEALTHCHECK command never passed\n${stderr}`)
      const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`)
      assert.equal(ready.status, 200, await ready.text())
      const page = await browserFetch(`http://127.0.0.1:${port}/private`, {
        redirect: 'manual',
        headers: { accept: 'text/html' },
      })
      assert.equal(page.status, 302)
      assert.ok(page.headers.get('location')!.startsWith(`${idp.issuer}/`))
      // State went to the data volume; the mounted config directory was not written.
      assert.ok(readdirSync(data).includes('gatehouse.db'), readdirSync(data).join(' '))
      assert.deepEqual(readdirSync(etc), ['gatehouse.yaml'])
    } finally {
      child.kill('SIGTERM')
    }
    assert.equal(await exited, 0, `a stop signal ends it cleanly\n${stderr}`)
    assert.equal((await check()).status, 1, 'the HEALTHCHECK fails once it is down')
  })
})
