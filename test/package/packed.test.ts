/**
 * The package as users install it: `npm pack` of this checkout, the tarball installed into an empty
 * folder, then the `gatehouse` command through npx (help, check, build-edge), `gatehouse dev` with a sign-in
 * through its embedded provider, every entry point imported
 * from a plain .mjs consumer under Node (the Node gateway started and its /healthz answered), and the
 * fetch handler run from the installed package under Deno and Bun (their npm packages ship the binaries).
 * An older Node gets one sentence and exit 2, from the installed command and from `npm start`.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { pathToFileURL } from 'node:url'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { installInto, packProject, REPO_ROOT, run, shown, userEnv } from '../helpers/pack.ts'
import { signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

/** Versions of the other runtimes the consumer test runs under, from their npm packages. */
const DENO = 'deno@2.9.6'
const BUN = 'bun@1.4.5'
const BASE = 'http://localhost:8787'
const SESSION_SECRET = 'packed-test-session-secret-0123456789abcdef'

/** A Node older than 22.18 on PATH (the machines here have Node 20 as `node`), for the version check. */
function oldNode(): { path: string; version: string } | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const path = join(dir, 'node')
    try {
      accessSync(path, constants.X_OK)
    } catch {
      continue
    }
    const version = execFileSync(path, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim()
    const [major = 0, minor = 0] = version.split('.').map(Number)
    if (major < 22 || (major === 22 && minor < 18)) return { path, version }
  }
  return undefined
}

/** A consumer of the Web entry points, the same file for Node, Deno and Bun. */
function webConsumer(p: Record<string, unknown>): string {
  return `import { validateConfig } from 'gatehouse/config'
import { createEdgeHandler, createHttpHeadersHandler, EDGE_FUNCTIONS } from 'gatehouse/edge'
import { createFetchHandler } from 'gatehouse/fetch'

const p = ${JSON.stringify(p)}
const config = validateConfig({
  public_url: p.base,
  upstream: p.upstream,
  provider: { issuer: p.issuer, client_id: p.clientId, client_secret: { env: 'CLIENT_SECRET' } },
  session: { secrets: [{ env: 'SESSION_SECRET' }] },
  lifetimes: p.lifetimes,
  routes: [{ path: '/static/*', allow: 'anonymous' }],
})
const handle = await createFetchHandler(config, {
  env: { CLIENT_SECRET: p.clientSecret, SESSION_SECRET: p.sessionSecret },
  clientAddressHeader: 'x-forwarded-for',
})
const client = { 'x-forwarded-for': '203.0.113.7' }
const open = await handle(new Request(p.base + '/static/app.css', { headers: client }))
const closed = await handle(
  new Request(p.base + '/private', { headers: { ...client, accept: 'text/html', 'sec-fetch-mode': 'navigate' } }),
)
console.log(JSON.stringify({
  open: open.status,
  openBody: await open.json(),
  closed: closed.status,
  location: closed.headers.get('location'),
  edge: [typeof createEdgeHandler, typeof createHttpHeadersHandler, EDGE_FUNCTIONS.length],
}))
if (globalThis.Deno) Deno.exit(0)
else process.exit(0)
`
}

describe('the packed package, installed into an empty folder', () => {
  let dir: string
  let consumer: string
  let tgz: string
  let idp: TestIdP
  let upstream: RecordingUpstream
  const bin = () => join(consumer, 'node_modules/.bin')
  const gatehouse = (args: string[], env: Record<string, string> = {}) =>
    run('npx', ['--no', '--', 'gatehouse', ...args], { cwd: consumer, env: userEnv(env), timeoutMs: 60_000 })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-packed-'))
    consumer = join(dir, 'consumer')
    mkdirSync(consumer)
    tgz = await packProject(dir)
    await installInto(consumer, [tgz, DENO, BUN])
    idp = await startTestIdP({
      redirectUris: [`${BASE}/oauth2/callback`, 'https://edge.example.com/oauth2/callback'],
    })
    upstream = await startRecordingUpstream()
  })

  after(async () => {
    await upstream?.close()
    await idp?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('the tarball holds the command and compiled JavaScript with types, no sources or tests', async () => {
    const r = await run('tar', ['-tzf', tgz])
    assert.equal(r.status, 0, shown(r))
    const files = r.stdout.trim().split('\n')
    const outside = files.filter(
      (f) => !/^package\/(bin\/gatehouse\.js|dist\/.+\.(js|d\.ts)|package\.json|README\.md|LICENSE)$/.test(f),
    )
    assert.deepEqual(outside, [])
    for (const f of [
      'package/dist/cli/main.js',
      'package/dist/entry/node.js',
      'package/dist/entry/node.d.ts',
      'package/dist/entry/fetch.d.ts',
      'package/dist/adapters/edge/handler.js',
    ]) {
      assert.ok(files.includes(f), `${f} is packed`)
    }
    const pkg = JSON.parse(readFileSync(join(consumer, 'node_modules/gatehouse/package.json'), 'utf8'))
    assert.equal(pkg.bin.gatehouse, './bin/gatehouse.js')
  })

  test('npx gatehouse --help prints the usage', async () => {
    const r = await gatehouse(['--help'])
    assert.equal(r.status, 0, shown(r))
    assert.match(r.stdout, /^Usage: gatehouse <command>/)
    assert.match(r.stdout, /build-edge/)
  })

  test('npx gatehouse check validates the example config', async () => {
    const r = await gatehouse(['check', '--config', join(REPO_ROOT, 'examples/gatehouse.yaml')])
    assert.equal(r.status, 0, shown(r))
    assert.match(r.stdout, /examples\/gatehouse\.yaml: valid/)
    assert.match(r.stdout, /Lifetimes \(explicit/)
  })

  test('npx gatehouse build-edge bundles the installed compiled edge handlers', async () => {
    const config = join(dir, 'edge.yaml')
    writeFileSync(
      config,
      `public_url: https://edge.example.com
upstream: https://origin.example.com
data_dir: ./edge-data
provider:
  issuer: ${idp.issuer}
  client_id: ${idp.clientId}
  client_secret: { env: EDGE_CLIENT_SECRET }
session:
  secrets: [{ env: EDGE_SESSION_SECRET }]
lifetimes: ${JSON.stringify(DEV_LIFETIMES)}
`,
    )
    const out = join(dir, 'edge-out')
    const r = await gatehouse(['build-edge', '--config', config, '--out', out], {
      EDGE_CLIENT_SECRET: idp.clientSecret,
      EDGE_SESSION_SECRET: SESSION_SECRET,
    })
    assert.equal(r.status, 0, shown(r))
    assert.match(r.stdout, /Built 5 Lambda@Edge bundles/)
    for (const fn of ['check-auth', 'parse-auth', 'refresh-auth', 'sign-out', 'http-headers']) {
      assert.ok(existsSync(join(out, `${fn}.zip`)), `${fn}.zip`)
      const mod = (await import(pathToFileURL(join(out, fn, 'index.mjs')).href)) as { handler: unknown }
      assert.equal(typeof mod.handler, 'function', `${fn} exports handler`)
    }
  })

  test('gatehouse dev from the installed package: sign in as demo and reach the demo app', async () => {
    const [port, adminPort] = [await freePort(), await freePort()]
    const password = 'packed-dev-demo-password'
    const child = spawn(
      join(bin(), 'gatehouse'),
      [
        'dev',
        '--port',
        String(port),
        '--admin-port',
        String(adminPort),
        '--data',
        join(dir, 'dev-data'),
        '--demo-password',
        password,
      ],
      { cwd: consumer, env: userEnv() },
    )
    let output = ''
    child.stdout.on('data', (d) => {
      output += d
    })
    child.stderr.on('data', (d) => {
      output += d
    })
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`gatehouse dev did not start:\n${output}`)), 30_000)
        child.stdout.on('data', () => {
          if (output.includes('Gatehouse dev is running')) {
            clearTimeout(timer)
            resolve()
          }
        })
        child.on('close', () => reject(new Error(`gatehouse dev exited:\n${output}`)))
      })
      const base = `http://localhost:${port}`
      const browser = createCookieClient({ fetch: browserFetch })
      const first = await browser.request(`${base}/`, { headers: { accept: 'text/html' } })
      assert.equal(first.status, 302)
      const callback = await signIn(browser, first.headers.get('location')!, 'demo', password, `${base}/_idp`)
      const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
      assert.equal(done.response.status, 200)
      assert.match(await done.response.text(), /X-Auth-Request-Preferred-Username[\s\S]*demo/i)
    } finally {
      child.kill('SIGTERM')
    }
    assert.equal(await exited, 0, output)
  })

  test('a plain .mjs consumer imports every entry point; deep imports are refused', async () => {
    const file = join(consumer, 'node-entry.mjs')
    writeFileSync(
      file,
      `import * as node from 'gatehouse'
import * as config from 'gatehouse/config'
import * as edge from 'gatehouse/edge'
import * as fetchEntry from 'gatehouse/fetch'

const gateway = await node.startGateway(
  config.validateConfig({
    public_url: ${JSON.stringify(BASE)},
    upstream: ${JSON.stringify(upstream.url)},
    data_dir: './gateway-data',
    provider: { issuer: ${JSON.stringify(idp.issuer)}, client_id: ${JSON.stringify(idp.clientId)}, client_secret: { env: 'CLIENT_SECRET' } },
    session: { secrets: [{ env: 'SESSION_SECRET' }] },
    lifetimes: ${JSON.stringify(DEV_LIFETIMES)},
  }),
  {
    baseDir: ${JSON.stringify(consumer)},
    env: { CLIENT_SECRET: ${JSON.stringify(idp.clientSecret)}, SESSION_SECRET: ${JSON.stringify(SESSION_SECRET)} },
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
  },
)
const health = await fetch(gateway.adminUrl + '/healthz')
await gateway.close()
const deep = await import('gatehouse/src/adapters/fetch/handler.ts').then(() => 'imported', (e) => e.code)
console.log(JSON.stringify({
  node: [typeof node.startGateway, typeof node.loadConfigFile, typeof node.GatehouseError],
  config: [typeof config.validateConfig, typeof config.ConfigError, typeof config.configSchema],
  edge: [typeof edge.createEdgeHandler, typeof edge.createHttpHeadersHandler],
  fetch: typeof fetchEntry.createFetchHandler,
  health: health.status,
  deep,
}))
process.exit(0)
`,
    )
    const r = await run(process.execPath, [file], { cwd: consumer, timeoutMs: 60_000 })
    assert.equal(r.status, 0, shown(r))
    // The gateway logs JSON lines to stdout too; the consumer's result is the line with `node`.
    const result = r.stdout.split('\n').find((l) => l.startsWith('{"node"'))
    assert.ok(result, shown(r))
    assert.deepEqual(JSON.parse(result), {
      node: ['function', 'function', 'function'],
      config: ['function', 'function', 'object'],
      edge: ['function', 'function'],
      fetch: 'function',
      health: 200,
      deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED',
    })
  })

  for (const runtime of ['node', 'deno', 'bun'] as const) {
    test(`the fetch handler from the installed package answers under ${runtime}`, async () => {
      const file = join(consumer, `web-${runtime}.mjs`)
      writeFileSync(
        file,
        webConsumer({
          base: BASE,
          upstream: upstream.url,
          issuer: idp.issuer,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          sessionSecret: SESSION_SECRET,
          lifetimes: DEV_LIFETIMES,
        }),
      )
      const seen = upstream.requests.length
      const [command, args] =
        runtime === 'node'
          ? [process.execPath, [file]]
          : runtime === 'deno'
            ? [
                join(bin(), 'deno'),
                ['run', '--allow-net', '--allow-env', '--allow-read', '--allow-sys', file],
              ]
            : [join(bin(), 'bun'), ['run', file]]
      const r = await run(command, args, {
        cwd: consumer,
        // Their caches stay in the temporary folder.
        env: userEnv({ DENO_DIR: join(dir, 'deno-cache'), BUN_INSTALL_CACHE_DIR: join(dir, 'bun-cache') }),
        timeoutMs: 60_000,
      })
      assert.equal(r.status, 0, shown(r))
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!)
      assert.equal(out.open, 200)
      assert.equal(out.openBody.path, '/static/app.css')
      assert.equal(out.closed, 302, 'a browser without a session is sent to sign in')
      assert.ok(String(out.location).startsWith(`${idp.issuer}/`), out.location)
      assert.deepEqual(out.edge, ['function', 'function', 5])
      assert.deepEqual(
        upstream.requests.slice(seen).map((q) => q.url),
        ['/static/app.css'],
        'only the anonymous route reached the upstream',
      )
    })
  }

  test('an older Node hears which Node Gatehouse needs, from the installed command and npm start', async (t) => {
    const old = oldNode()
    if (old === undefined) {
      if (process.env.CI === 'true') assert.fail('no Node older than 22.18 on PATH to check against')
      t.skip('no Node older than 22.18 on PATH')
      return
    }
    const sentence = `Gatehouse needs Node 22.18 or newer; this is Node ${old.version}.\n`
    const installed = await run(old.path, [
      join(consumer, 'node_modules/gatehouse/bin/gatehouse.js'),
      '--help',
    ])
    assert.equal(installed.status, 2, shown(installed))
    assert.equal(installed.stderr, sentence)
    assert.equal(installed.stdout, '')
    // What `npm start` runs, from the checkout (the sources).
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'))
    assert.equal(pkg.scripts.start, 'node bin/gatehouse.js dev')
    const start = await run(old.path, ['bin/gatehouse.js', 'dev'], { cwd: REPO_ROOT })
    assert.equal(start.status, 2, shown(start))
    assert.equal(start.stderr, sentence)
  })
})
