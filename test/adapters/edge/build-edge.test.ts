/**
 * `gatehouse build-edge` end to end: the CLI run against a real oidc-provider, each produced bundle
 * imported and invoked with documented CloudFront events, a full sign-in through the bundled code,
 * the baked keys serving while the provider is down, and the build's own failure when neither the
 * provider nor a persisted copy is there. The deployable zips hold exactly the bundles and are the
 * same bytes for the same bundle.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { unzipSync } from 'fflate'
import type {
  CloudFrontRequestEvent,
  CloudFrontRequestResult,
  CloudFrontResponse,
  CloudFrontResponseEvent,
} from '../../../src/adapters/edge/cloudfront.ts'
import { prepareEdgeBundles, writeEdgeBundles, zipBundle } from '../../../src/cli/build-edge.ts'
import { loadConfigFile } from '../../../src/config/load.ts'
import { openDatabase } from '../../../src/store/open-sqlite.ts'
import { browserFetch } from '../../helpers/browser-fetch.ts'
import { createCookieClient } from '../../helpers/cookie-client.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'
import {
  createJar,
  DOMAIN,
  generated,
  header,
  NAVIGATE,
  originResponse,
  passedOn,
  viewerRequest,
} from './events.ts'

const run = promisify(execFile)
const MAIN = new URL('../../../src/cli/main.ts', import.meta.url).pathname
const ORIGIN = `https://${DOMAIN}`
const SESSION_SECRET = 'build-edge-session-secret-abcdefghijklmnop'
const FUNCTIONS = ['check-auth', 'parse-auth', 'refresh-auth', 'sign-out', 'http-headers'] as const
const LIMIT = 1_048_576

type RequestHandler = (event: CloudFrontRequestEvent) => Promise<CloudFrontRequestResult>
type ResponseHandler = (event: CloudFrontResponseEvent) => Promise<CloudFrontResponse>

function configYaml(issuer: string, clientId: string, dataDir: string): string {
  return `public_url: ${ORIGIN}
upstream: https://origin.example.com
data_dir: ${dataDir}
provider:
  issuer: ${issuer}
  client_id: ${clientId}
  client_secret: { env: EDGE_CLIENT_SECRET }
  scopes: [openid, email, profile, groups, offline_access]
session:
  secrets: [{ env: EDGE_SESSION_SECRET }]
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
headers:
  frame_options: DENY
`
}

describe('gatehouse build-edge', () => {
  let idp: TestIdP
  let dir: string
  let out: string
  let env: NodeJS.ProcessEnv
  let loaded = 0

  /** Imports a bundle as Lambda would (a fresh module instance each time). */
  async function load<T>(fn: string): Promise<T> {
    const mod = (await import(`${pathToFileURL(join(out, fn, 'index.mjs')).href}?instance=${++loaded}`)) as {
      handler: T
    }
    assert.equal(typeof mod.handler, 'function', `${fn} exports handler`)
    return mod.handler
  }

  const build = (config: string, outDir: string) =>
    run(process.execPath, [MAIN, 'build-edge', '--config', config, '--out', outDir], { env }).then(
      (r) => ({ code: 0, ...r }),
      (err: { code: number; stdout: string; stderr: string }) => err,
    )

  before(async () => {
    idp = await startTestIdP({
      redirectUris: [`${ORIGIN}/oauth2/callback`],
      postLogoutRedirectUris: [`${ORIGIN}/`],
    })
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-build-edge-'))
    out = join(dir, 'dist')
    // The gateway's data dir exists: the build persists the provider's copies there for later.
    openDatabase(join(dir, 'data')).close()
    writeFileSync(join(dir, 'gatehouse.yaml'), configYaml(idp.issuer, idp.clientId, './data'))
    env = { ...process.env, EDGE_CLIENT_SECRET: idp.clientSecret, EDGE_SESSION_SECRET: SESSION_SECRET }
  })

  after(async () => {
    await idp?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('builds five bundles under the viewer-trigger limit, each with only the secrets it needs', async () => {
    const r = await build(join(dir, 'gatehouse.yaml'), out)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /Built 5 Lambda@Edge bundles/)
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))
    assert.equal(manifest.provider.source, 'network')
    assert.equal(manifest.callbackPath, '/oauth2/callback')
    for (const fn of FUNCTIONS) {
      const file = join(out, fn, 'index.mjs')
      const { size, mode } = statSync(file)
      assert.ok(size < LIMIT, `${fn}: ${size} bytes`)
      assert.equal(mode & 0o777, 0o600, `${fn} is private`)
      assert.equal(manifest.functions.find((f: { function: string }) => f.function === fn).bytes, size)
      const text = readFileSync(file, 'utf8')
      assert.ok(!/from\s*"node:|require\(/.test(text), `${fn} uses no Node module`)
      assert.ok(!text.includes('zod'), `${fn} carries no config validator`)
    }
    const headers = readFileSync(join(out, 'http-headers', 'index.mjs'), 'utf8')
    assert.ok(!headers.includes(SESSION_SECRET), 'http-headers holds no session secret')
    assert.ok(!headers.includes(idp.clientSecret), 'http-headers holds no client secret')
    assert.ok(!headers.includes(idp.issuer), 'http-headers holds nothing of the provider')
    assert.ok(
      statSync(join(out, 'http-headers', 'index.mjs')).size < 10_000,
      'http-headers is tiny: no crypto library',
    )
    const check = readFileSync(join(out, 'check-auth', 'index.mjs'), 'utf8')
    assert.ok(!check.includes(idp.clientSecret), 'check-auth never holds the client secret')
    assert.ok(check.includes(SESSION_SECRET), 'check-auth holds the session secret it decrypts with')
    assert.ok(readFileSync(join(out, 'parse-auth', 'index.mjs'), 'utf8').includes(idp.clientSecret))
  })

  test('writes one deployable zip per function: index.mjs holding exactly the bundle, private, under the limit', async () => {
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))
    for (const fn of FUNCTIONS) {
      const file = join(out, `${fn}.zip`)
      const { size, mode } = statSync(file)
      assert.ok(size < LIMIT, `${fn}.zip: ${size} bytes`)
      assert.equal(mode & 0o777, 0o600, `${fn}.zip is private`)
      const zip = readFileSync(file)
      const entries = unzipSync(zip)
      // deploy/terraform/aws-edge deploys it with handler = "index.handler".
      assert.deepEqual(Object.keys(entries), ['index.mjs'], `${fn}.zip holds index.mjs only`)
      assert.deepEqual(Buffer.from(entries['index.mjs']!), readFileSync(join(out, fn, 'index.mjs')))
      assert.deepEqual(
        Buffer.from(zipBundle(entries['index.mjs']!)),
        zip,
        `${fn}.zip is a function of the bundle`,
      )
      const listed = manifest.functions.find((f: { function: string }) => f.function === fn)
      assert.equal(listed.zip, `${fn}.zip`)
      assert.equal(listed.zipBytes, size)
      assert.equal(listed.zipSha256, createHash('sha256').update(zip).digest('hex'))
    }
    const headers = new TextDecoder().decode(
      unzipSync(readFileSync(join(out, 'http-headers.zip')))['index.mjs'],
    )
    assert.ok(!headers.includes(SESSION_SECRET), 'the http-headers zip holds no session secret')
    assert.ok(!headers.includes(idp.clientSecret), 'the http-headers zip holds no client secret')
    assert.ok(!headers.includes(idp.issuer), 'the http-headers zip holds nothing of the provider')
  })

  test('provider.ca is refused: the edge trusts the public roots only', async () => {
    const { config, baseDir } = loadConfigFile(join(dir, 'gatehouse.yaml'))
    await assert.rejects(
      prepareEdgeBundles({ ...config, provider: { ...config.provider, ca: 'ca.pem' } }, { baseDir, env }),
      {
        name: 'ConfigError',
        message: /provider\.ca/,
      },
    )
  })

  test('apps are refused: one distribution fronts one app', async () => {
    const { config, baseDir } = loadConfigFile(join(dir, 'gatehouse.yaml'))
    const app = {
      name: 'wiki',
      host: 'wiki.example.com',
      path_prefix: '/',
      upstream: 'https://wiki.internal',
    }
    await assert.rejects(
      prepareEdgeBundles({ ...config, upstream: undefined, apps: [app] } as unknown as typeof config, {
        baseDir,
        env,
      }),
      { name: 'ConfigError', message: /apps/ },
    )
  })

  test('the zips are deterministic: two builds of the same bundles give the same bytes, with a fixed timestamp', async () => {
    const { config, baseDir } = loadConfigFile(join(dir, 'gatehouse.yaml'))
    const prepared = await prepareEdgeBundles(config, { baseDir, env })
    const first = await writeEdgeBundles(prepared.bundles, join(dir, 'det-1'))
    const second = await writeEdgeBundles(prepared.bundles, join(dir, 'det-2'))
    for (const fn of FUNCTIONS) {
      const a = readFileSync(join(dir, 'det-1', `${fn}.zip`))
      const b = readFileSync(join(dir, 'det-2', `${fn}.zip`))
      assert.deepEqual(a, b, `${fn}.zip`)
      assert.equal(
        first.find((x) => x.function === fn)?.zip.sha256,
        second.find((x) => x.function === fn)?.zip.sha256,
      )
      // The local file header's DOS time and date (offsets 10 and 12): 00:00:00 on 1980-01-01, not the build's.
      assert.equal(a.readUInt32LE(0), 0x04034b50, 'a zip local file header')
      assert.equal(a.readUInt16LE(10), 0, `${fn}.zip: fixed time`)
      assert.equal(a.readUInt16LE(12), (0 << 9) | (1 << 5) | 1, `${fn}.zip: fixed date`)
    }
  })

  test('the bundles answer CloudFront events: a full sign-in through the bundled code', async () => {
    const checkAuth = await load<RequestHandler>('check-auth')
    const parseAuth = await load<RequestHandler>('parse-auth')
    const refreshAuth = await load<RequestHandler>('refresh-auth')
    const signOut = await load<RequestHandler>('sign-out')
    const httpHeaders = await load<ResponseHandler>('http-headers')

    const xhr = generated(await checkAuth(viewerRequest('/api', { headers: { 'sec-fetch-mode': 'cors' } })))
    assert.equal(xhr.status, '401')
    const jar = createJar()
    const start = generated(await checkAuth(viewerRequest('/home', { headers: NAVIGATE })))
    assert.equal(start.status, '302')
    assert.equal(
      header(start.headers, 'x-frame-options'),
      'DENY',
      'the configured headers, on generated responses too',
    )
    jar.take(start)
    const callback = await signIn(
      createCookieClient({ fetch: browserFetch }),
      header(start.headers, 'location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    const done = generated(
      await parseAuth(
        viewerRequest(callback.pathname + callback.search, {
          headers: { ...NAVIGATE, cookie: jar.header() },
        }),
      ),
    )
    assert.equal(done.status, '302')
    assert.equal(header(done.headers, 'location'), '/home')
    jar.take(done)
    const passed = passedOn(
      await checkAuth(viewerRequest('/home', { headers: { ...NAVIGATE, cookie: jar.header() } })),
    )
    assert.equal(header(passed.headers, 'x-auth-request-email'), DEMO_USER.email)

    const refresh = generated(
      await refreshAuth(
        viewerRequest('/oauth2/refresh', {
          method: 'POST',
          headers: { accept: 'application/json', cookie: jar.header() },
        }),
      ),
    )
    assert.equal(refresh.status, '200')
    const bye = generated(
      await signOut(viewerRequest('/oauth2/sign_out', { headers: { ...NAVIGATE, cookie: jar.header() } })),
    )
    assert.equal(bye.status, '302')
    assert.ok(header(bye.headers, 'location')!.startsWith(`${idp.issuer}/session/end`))

    const response = await httpHeaders(originResponse('200', { 'content-type': 'text/html' }))
    assert.equal(header(response.headers, 'x-frame-options'), 'DENY')
    assert.equal(header(response.headers, 'strict-transport-security'), 'max-age=31536000')
  })

  test('with the provider down: the baked keys still start sign-ins; a rebuild uses the persisted copy; without one it fails clearly', async () => {
    await idp.close()
    const checkAuth = await load<RequestHandler>('check-auth')
    const start = generated(await checkAuth(viewerRequest('/x', { headers: NAVIGATE })))
    assert.equal(start.status, '302', 'discovery came from the bundle, not the network')
    assert.ok(header(start.headers, 'location')!.startsWith(`${idp.issuer}/auth?`))

    const again = await build(join(dir, 'gatehouse.yaml'), join(dir, 'dist2'))
    assert.equal(again.code, 0, again.stderr)
    assert.match(again.stderr, /unreachable .*baking the copies persisted in/)
    assert.equal(
      JSON.parse(readFileSync(join(dir, 'dist2', 'manifest.json'), 'utf8')).provider.source,
      'persisted',
    )

    mkdirSync(join(dir, 'fresh'))
    writeFileSync(join(dir, 'fresh', 'gatehouse.yaml'), configYaml(idp.issuer, idp.clientId, './data'))
    const failed = await build(join(dir, 'fresh', 'gatehouse.yaml'), join(dir, 'dist3'))
    assert.equal(failed.code, 1)
    assert.match(
      failed.stderr,
      /cannot bake the provider's discovery document and JWKS: .* is unreachable .* has no persisted copy/,
    )

    const missing = await run(
      process.execPath,
      [MAIN, 'build-edge', '--config', join(dir, 'gatehouse.yaml'), '--out', join(dir, 'dist4')],
      {
        env: { ...process.env, EDGE_CLIENT_SECRET: 'x' },
      },
    ).catch((err: { code: number; stderr: string }) => err)
    assert.equal((missing as { code: number }).code, 1)
    assert.match(
      (missing as { stderr: string }).stderr,
      /session\.secrets\[0\]: expected environment variable EDGE_SESSION_SECRET to be set/,
    )
  })
})
