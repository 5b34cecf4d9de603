/**
 * `gatehouse build-edge --config FILE --out DIR`: one Lambda@Edge bundle per function of seed 004
 * (check-auth, parse-auth, refresh-auth, sign-out, http-headers), each `DIR/<function>/index.mjs`
 * with `export const handler`, and next to it the deployable `DIR/<function>.zip` (that one file as
 * `index.mjs`, for the handler `index.handler`), written deterministically so its hash changes only
 * when the bundle does. The edge has no environment variables, so secrets are resolved here
 * and baked in, each function getting only what it uses (http-headers: none). The provider's
 * discovery document and JWKS are fetched now (or taken from the copies persisted in data_dir when
 * the provider is unreachable) and baked in as the last known good copies.
 */

import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, extname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { build } from 'esbuild'
import { zipSync } from 'fflate'
import type {
  CoreBundle,
  EdgeBundle,
  EdgeFunctionName,
  HeadersBundle,
  ProviderCopy,
} from '../adapters/edge/bundle.ts'
import { EDGE_FUNCTIONS } from '../adapters/edge/bundle.ts'
import { type AssembleConfig, assembleCore } from '../assemble.ts'
import { ConfigError, loadConfigFile, resolveCoreSecrets } from '../config/load.ts'
import type { Config } from '../config/schema.ts'
import { type Clock, systemClock } from '../core/clock.ts'
import { GatehouseError } from '../core/errors.ts'
import { silentLogger } from '../core/ports.ts'
import { createMemoryStore } from '../store/memory-store.ts'
import { openDatabase } from '../store/open-sqlite.ts'
import type { CacheStore } from '../store/ports.ts'
import { createSQLiteStore } from '../store/sqlite-store.ts'

/** CloudFront's limit for a viewer-request or viewer-response function package. */
export const VIEWER_TRIGGER_LIMIT_BYTES = 1_048_576

/** The file each zip holds: deploy/terraform/aws-edge gives Lambda the handler `index.handler`. */
export const HANDLER_FILE = 'index.mjs'

/**
 * The zip entries' modification time: 1980-01-01 00:00, the earliest a zip can hold. Built from local
 * components because fflate encodes the local date and time: the bytes are the same in every time zone.
 */
const ZIP_MTIME = new Date(1980, 0, 1, 0, 0, 0)

/**
 * The deployable package of one bundle: a zip holding `code` as `index.mjs`, with a fixed timestamp
 * and Unix mode 644 inside (Lambda's runtime user must be able to read it), so the same bundle always
 * gives the same bytes and Terraform's `source_code_hash` changes only when the bundle does.
 */
export function zipBundle(code: Uint8Array): Uint8Array {
  return zipSync(
    { [HANDLER_FILE]: [code, { mtime: ZIP_MTIME, os: 3, attrs: (0o100644 << 16) >>> 0 }] },
    { level: 9, mtime: ZIP_MTIME },
  )
}

export class EdgeBuildError extends GatehouseError {
  override readonly name = 'EdgeBuildError'
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_EDGE_BUILD', message, undefined, options)
  }
}

export interface PrepareOptions {
  baseDir: string
  env?: Record<string, string | undefined>
  fetch?: typeof fetch
  clock?: Clock
}

export interface PreparedBundles {
  bundles: Record<EdgeFunctionName, EdgeBundle>
  /** Where the baked provider copies came from, and how old they are (seconds). */
  provider: { source: 'network' | 'persisted'; ageSeconds: number; warning: string | undefined }
}

/** The config fields the core reads, with the secret references left out (the values are baked apart). */
function edgeConfig(config: Config): AssembleConfig {
  const baked = { env: 'GATEHOUSE_BAKED_AT_BUILD' }
  const { encryption_secrets: _unused, ...keys } = config.keys
  return {
    public_url: config.public_url,
    provider: { ...config.provider, client_secret: baked },
    session: { ...config.session, secrets: config.session.secrets.map(() => baked) },
    lifetimes: config.lifetimes,
    sign_in: config.sign_in,
    sign_out: config.sign_out,
    routes: config.routes,
    identity: config.identity,
    headers: config.headers,
    keys,
  }
}

/** A cache store that remembers every copy read or written through it: those are what gets baked. */
function recording(inner: CacheStore): CacheStore & { copies: Map<string, ProviderCopy> } {
  const copies = new Map<string, ProviderCopy>()
  return {
    copies,
    async getCached(key) {
      const hit = await inner.getCached(key)
      if (hit !== undefined && !copies.has(key)) copies.set(key, { key, ...hit })
      return hit
    },
    async putCached(key, value, fetchedAt) {
      await inner.putCached(key, value, fetchedAt)
      copies.set(key, { key, value, fetchedAt })
    },
  }
}

/**
 * Resolves secrets, fetches (or loads) the provider's copies, and returns what each function's bundle
 * bakes in. Throws EdgeBuildError when neither the provider nor a persisted copy can be had.
 */
export async function prepareEdgeBundles(config: Config, options: PrepareOptions): Promise<PreparedBundles> {
  const clock = options.clock ?? systemClock
  const env = options.env ?? process.env
  if (config.provider.ca !== undefined) {
    // Lambda@Edge trusts the public roots only; a provider on a private PKI cannot be reached from there.
    throw new ConfigError('config', [
      {
        path: 'provider.ca',
        message: 'is not supported at the edge (Lambda@Edge trusts the public roots only); remove it',
      },
    ])
  }
  if (config.apps !== undefined) {
    // One CloudFront distribution fronts one origin: its functions judge one app's routes.
    throw new ConfigError('config', [
      {
        path: 'apps',
        message:
          'is not supported at the edge: build one set of functions per distribution, each with its upstream and routes',
      },
    ])
  }
  if (config.providers !== undefined) {
    // The functions bake one provider's client and one callback path.
    throw new ConfigError('config', [
      {
        path: 'providers',
        message: 'is not supported at the edge: the functions take one provider (write it as provider)',
      },
    ])
  }
  const auth = config.provider.client_auth
  if (config.provider.client_secret === undefined || auth === 'private_key_jwt' || auth === 'none') {
    // The parse-auth, refresh-auth and sign-out functions carry the client secret baked in; a private key
    // is not baked into every bundle, and a public client is not built for the edge yet.
    throw new ConfigError('config', [
      {
        path: 'provider.client_auth',
        message: `${auth ?? 'none (no client_secret)'} is not supported at the edge: use client_secret_basic or client_secret_post with provider.client_secret`,
      },
    ])
  }
  const { session, clientSecret } = resolveCoreSecrets(config, options.baseDir, env)

  // The gateway's persisted copies (data_dir), when there are any, are the fallback and get refreshed.
  const dataDir = resolve(options.baseDir, config.data_dir)
  const db = existsSync(resolve(dataDir, 'gatehouse.db')) ? openDatabase(dataDir) : undefined
  try {
    const store = recording(db !== undefined ? createSQLiteStore(db) : createMemoryStore({ clock }))
    const assembled = await assembleCore(config, {
      clock,
      log: silentLogger,
      secrets: { session, clientSecret },
      cacheStore: store,
      fetch: options.fetch ?? fetch,
    })
    let failure: unknown
    await assembled.providerCache.refreshNow().catch((err: unknown) => {
      failure = err
    })
    const status = assembled.providerCache.status()
    if (status.metadata.source === 'none' || status.jwks.source === 'none' || store.copies.size < 2) {
      const why = failure instanceof Error ? failure.message : 'no copy'
      throw new EdgeBuildError(
        `cannot bake the provider's discovery document and JWKS: ${config.provider.issuer} is unreachable (${why}) and ${db === undefined ? `${dataDir} has no persisted copy` : `the copy persisted in ${dataDir} is missing or older than provider.cache.stale_if_error`}`,
        { cause: failure },
      )
    }
    const age = Math.max(status.metadata.ageSeconds ?? 0, status.jwks.ageSeconds ?? 0)
    const source = failure === undefined ? 'network' : 'persisted'
    const warning =
      failure === undefined
        ? undefined
        : `${config.provider.issuer} is unreachable (${(failure as Error).message}); baking the copies persisted in ${dataDir}, ${age} s old`
    const provider = [...store.copies.values()]
    const builtAt = Math.floor(clock.now() / 1000)
    const shared = { builtAt, config: edgeConfig(config), provider, logLevel: config.log.level }
    const core = (fn: CoreBundle['function'], withClientSecret: boolean): CoreBundle => ({
      function: fn,
      ...shared,
      secrets: withClientSecret ? { session, clientSecret } : { session },
    })
    const headers: HeadersBundle = {
      function: 'http-headers',
      builtAt,
      securityHeaders: assembled.securityHeaders,
    }
    return {
      bundles: {
        // check-auth redirects refreshes to refresh-auth: it never needs the client secret.
        'check-auth': core('check-auth', false),
        'parse-auth': core('parse-auth', true),
        'refresh-auth': core('refresh-auth', true),
        // sign-out revokes the refresh token, which takes client authentication.
        'sign-out': core('sign-out', true),
        'http-headers': headers,
      },
      provider: { source, ageSeconds: age, warning },
    }
  } finally {
    db?.close()
  }
}

export interface BuiltBundle {
  function: EdgeFunctionName
  file: string
  bytes: number
  sha256: string
  /** The deployable zip, `outDir/<function>.zip`. */
  zip: { file: string; bytes: number; sha256: string }
}

const HERE = fileURLToPath(import.meta.url)
const EDGE_DIR = resolve(dirname(HERE), '../adapters/edge')
const REPO_ROOT = resolve(EDGE_DIR, '../../..')
// The sources in a checkout, the compiled `dist/` in the installed package: the edge modules sit beside this one in both.
const EXT = extname(HERE)

/** The entry module esbuild bundles for one function: the factory and its baked bundle. */
function entrySource(bundle: EdgeBundle): string {
  const baked = JSON.stringify(bundle)
  if (bundle.function === 'http-headers') {
    return `import { createHttpHeadersHandler } from ${JSON.stringify(resolve(EDGE_DIR, `http-headers${EXT}`))}\nexport const handler = createHttpHeadersHandler(${baked})\n`
  }
  return `import { createEdgeHandler } from ${JSON.stringify(resolve(EDGE_DIR, `handler${EXT}`))}\nexport const handler = createEdgeHandler(${baked})\n`
}

/**
 * Bundles each function into `outDir/<function>/index.mjs` and zips it into `outDir/<function>.zip`
 * (both mode 600: most hold secrets).
 */
export async function writeEdgeBundles(
  bundles: Record<EdgeFunctionName, EdgeBundle>,
  outDir: string,
): Promise<BuiltBundle[]> {
  const built: BuiltBundle[] = []
  for (const fn of EDGE_FUNCTIONS) {
    const result = await build({
      stdin: {
        contents: entrySource(bundles[fn]),
        resolveDir: REPO_ROOT,
        sourcefile: `${fn}.js`,
        loader: 'js',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      minify: true,
      legalComments: 'none',
      write: false,
      outfile: resolve(outDir, fn, HANDLER_FILE),
      logLevel: 'silent',
    })
    const out = result.outputFiles[0]
    if (out === undefined) throw new EdgeBuildError(`${fn}: esbuild produced no output`)
    if (out.contents.byteLength >= VIEWER_TRIGGER_LIMIT_BYTES) {
      throw new EdgeBuildError(
        `${fn}: ${out.contents.byteLength} bytes, over CloudFront's ${VIEWER_TRIGGER_LIMIT_BYTES}-byte limit for viewer triggers`,
      )
    }
    const zip = zipBundle(out.contents)
    // CloudFront's quota is on the zipped package; the check above on the bundle itself is stricter.
    if (zip.byteLength >= VIEWER_TRIGGER_LIMIT_BYTES) {
      throw new EdgeBuildError(
        `${fn}: the zip is ${zip.byteLength} bytes, over CloudFront's ${VIEWER_TRIGGER_LIMIT_BYTES}-byte limit for viewer triggers`,
      )
    }
    mkdirSync(dirname(out.path), { recursive: true, mode: 0o700 })
    const zipFile = resolve(outDir, `${fn}.zip`)
    for (const [file, bytes] of [
      [out.path, out.contents],
      [zipFile, zip],
    ] as const) {
      writeFileSync(file, bytes, { mode: 0o600 })
      chmodSync(file, 0o600) // `mode` applies only to a new file: a rebuild over an older one keeps it private too
    }
    built.push({
      function: fn,
      file: out.path,
      bytes: out.contents.byteLength,
      sha256: createHash('sha256').update(out.contents).digest('hex'),
      zip: { file: zipFile, bytes: zip.byteLength, sha256: createHash('sha256').update(zip).digest('hex') },
    })
  }
  return built
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, out: { type: 'string', short: 'o' } },
  })
  if (values.config === undefined || values.out === undefined) {
    process.stderr.write('gatehouse build-edge: --config FILE and --out DIR are required\n')
    return 1
  }
  try {
    const { config, baseDir } = loadConfigFile(values.config)
    const prepared = await prepareEdgeBundles(config, { baseDir })
    if (prepared.provider.warning !== undefined)
      process.stderr.write(`warning: ${prepared.provider.warning}\n`)
    const outDir = resolve(values.out)
    const built = await writeEdgeBundles(prepared.bundles, outDir)
    const manifest = {
      builtAt: prepared.bundles['check-auth'].builtAt,
      publicUrl: new URL(config.public_url).origin,
      callbackPath: '/oauth2/callback',
      provider: { issuer: config.provider.issuer, ...prepared.provider },
      functions: built.map((b) => ({
        function: b.function,
        bytes: b.bytes,
        sha256: b.sha256,
        zip: `${b.function}.zip`,
        zipBytes: b.zip.bytes,
        zipSha256: b.zip.sha256,
      })),
    }
    writeFileSync(resolve(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 })
    process.stdout.write(
      `Built ${built.length} Lambda@Edge bundles in ${outDir} (limit ${VIEWER_TRIGGER_LIMIT_BYTES} bytes each)\n`,
    )
    for (const b of built)
      process.stdout.write(
        `  ${b.function.padEnd(13)} ${String(b.bytes).padStart(8)} bytes  ${`${b.function}/${HANDLER_FILE}`.padEnd(22)}  ${String(b.zip.bytes).padStart(8)} bytes  ${b.function}.zip\n`,
      )
    process.stdout.write(
      `Provider copies: ${prepared.provider.source}, ${prepared.provider.ageSeconds} s old. The bundles hold secrets: keep ${outDir} private.\n`,
    )
    return 0
  } catch (err) {
    if (err instanceof ConfigError || err instanceof EdgeBuildError) {
      process.stderr.write(`gatehouse build-edge: ${err.message}\n`)
      return 1
    }
    throw err
  }
}
