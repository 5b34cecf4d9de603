/**
 * Reloading the config without a restart (docs/operations.md, "Reloading the config"): on SIGHUP, on a
 * change of the file, or through `Gateway.reload`. The new file is read, validated and everything it
 * needs is built before anything serving changes; a file that fails any of that leaves the running
 * config in place, says why in one log line and counts `gatehouse_config_reloads_total{result="error"}`.
 *
 * Keys read once to build the long-lived parts (sockets, stores, key ring, token service, the expiry
 * monitor) are not applied live: a reload that changes one applies the rest, keeps the running value of
 * these, and names them in a warning, `/status.json` and `gatehouse_config_restart_pending` (the way
 * PostgreSQL's `pg_reload_conf()` and its `pending_restart` treat such settings).
 */
import { createHash } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import { type FSWatcher, readFileSync, watch } from 'node:fs'
import type { Server } from 'node:http'
import { dirname, resolve } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { Counter, Gauge, type Registry } from 'prom-client'
import { ConfigError, type ConfigProblem, parseConfigText } from './config/load.ts'
import type { Config } from './config/schema.ts'
import type { Clock } from './core/clock.ts'
import type { Logger } from './core/ports.ts'

/**
 * Config keys (dotted paths) a reload does not apply: what was built from them at start lives as long as
 * the process (listening sockets, stores, key ring, token service, the session revocation list's
 * horizon, the expiry monitor), or existing sessions are bound to them (the provider's issuer and client).
 */
export const RESTART_ONLY_KEYS: readonly string[] = Object.freeze([
  'public_url',
  'listen',
  'admin',
  'server',
  'tls',
  'data_dir',
  'store',
  'keys',
  'tokens',
  'lifetimes.session.max_ttl',
  'lifetimes.api_token',
  'lifetimes.derived_token',
  'lifetimes.signing_key',
  'provider.issuer',
  'provider.client_id',
  'provider.ca',
  'provider.client_secret_expires',
  'session.secret_max_age',
  'alerts',
  'expiry_cliff',
  'audit',
  // The tracer provider and its exporter are set up once (src/trace/).
  'telemetry',
])

type Obj = Readonly<Record<string, unknown>>

function getIn(obj: unknown, keys: readonly string[]): unknown {
  let v = obj
  for (const k of keys) v = v !== null && typeof v === 'object' ? (v as Obj)[k] : undefined
  return v
}

function setIn(obj: Obj, keys: readonly string[], value: unknown): Obj {
  const [k, ...rest] = keys as [string, ...string[]]
  const copy: Record<string, unknown> = { ...obj }
  if (rest.length > 0) copy[k] = setIn((obj[k] ?? {}) as Obj, rest, value)
  else if (value === undefined) delete copy[k]
  else copy[k] = value
  return Object.freeze(copy)
}

/** Config `apps`: its host names join the data port's Host allow-list, which is set at start. */
function appHosts(config: Config): string[] | undefined {
  return config.apps === undefined ? undefined : [...new Set(config.apps.map((a) => a.host))].sort()
}

/** Config `providers`: which there are and who they are (sessions are bound to these). */
function providerIdentities(config: Config): unknown[] | undefined {
  return config.providers?.map((p) => [p.name, p.issuer, p.client_id, p.ca, p.client_secret_expires])
}

/**
 * The restart-only keys whose value in `next` differs from the running one; `apps` as a whole when the
 * host names it serves change (or apps are turned on or off), since the Host check is built at start;
 * `providers` as a whole when a provider is added, removed, renamed or given another issuer, client or CA
 * (or the list is turned on or off).
 */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const changed = RESTART_ONLY_KEYS.filter((path) => {
    const keys = path.split('.')
    return !isDeepStrictEqual(getIn(running, keys), getIn(next, keys))
  })
  if (!isDeepStrictEqual(appHosts(running), appHosts(next))) changed.push('apps')
  if (!isDeepStrictEqual(providerIdentities(running), providerIdentities(next))) changed.push('providers')
  return changed
}

/** `next` with the running value of every restart-only key: what a reload applies. */
export function withRunningRestartOnly(running: Config, next: Config): Config {
  let out = next as unknown as Obj
  const pending = restartOnlyChanges(running, next)
  // Turning apps on or off changes what `upstream` and `routes` mean: until the restart, all three keep
  // their running values together (never apps with a top-level upstream, or neither).
  const kept = pending.includes('apps') ? [...pending, 'upstream', 'routes'] : pending
  for (const path of kept) {
    const keys = path.split('.')
    out = setIn(out, keys, getIn(running, keys))
  }
  let effective = out as unknown as Config
  // `provider` is the first of `providers` (src/config/schema.ts), also after a kept list.
  if (effective.providers !== undefined && effective.provider !== effective.providers[0])
    effective = Object.freeze({ ...effective, provider: effective.providers[0]! })
  // The one cross-key rule a kept value can break: a session may not be renewed past its cap.
  const { ttl, max_ttl: maxTtl } = effective.lifetimes.session
  if (ttl > maxTtl) {
    throw new ConfigError('config', [
      {
        path: 'lifetimes.session.ttl',
        message: `expected at most the running lifetimes.session.max_ttl (${maxTtl}s; a new max_ttl applies after a restart), got ${ttl}s`,
      },
    ])
  }
  return effective
}

/** The top-level keys whose value differs: what a reload changed, for its log line. */
export function changedKeys(before: Config, after: Config): string[] {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)])
  return [...keys].filter((k) => !isDeepStrictEqual((before as Obj)[k], (after as Obj)[k])).sort()
}

/** sha256 of the config file's bytes, hex: compare with `sha256sum gatehouse.yaml`. */
export function configHash(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [
      { path: '(file)', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}` },
    ])
  }
}

/** Reads, parses and validates the config file; the hash is of the exact text validated. */
export function loadConfigForReload(file: string): { config: Config; baseDir: string; hash: string } {
  const text = readConfigText(file)
  return { ...parseConfigText(text, file), hash: configHash(text) }
}

export interface ReloadResult {
  result: 'ok' | 'error'
  /** sha256 of the file (of the config's JSON when given as an object). */
  hash: string
  /** Top-level keys whose running value changed. */
  changed: string[]
  /** Keys that differ in the file and wait for a restart (their running value is kept). */
  restartPending: string[]
  /** Why an `error` reload was refused. */
  problems: ConfigProblem[]
}

export interface LoadedConfigStatus {
  file: string | undefined
  hash: string
  /** When the running config was loaded (at start or by the last successful reload), seconds since the epoch. */
  loadedAt: number
  restartPending: string[]
}

export interface ConfigReloaderOptions {
  /** The config the process started with, and the hash of its file. */
  initial: { config: Config; hash: string }
  /** The file `reloadFromFile` and the watcher read. */
  file?: string | undefined
  clock: Clock
  log: Logger
  registry: Registry
  /**
   * Builds everything `next` needs without touching what serves now, and returns the function that
   * swaps it in (synchronous, cannot fail). Throws (a ConfigError, or any error) to refuse the reload.
   */
  prepare(next: Config, running: Config): Promise<() => void>
}

export interface ConfigReloader {
  /** Apply a validated config (tests, embedders). Reloads run one at a time, in order. */
  reload(config: Config, hash?: string): Promise<ReloadResult>
  /** Read, validate and apply the config file (SIGHUP). */
  reloadFromFile(): Promise<ReloadResult>
  /** The running config (restart-only keys as at start). */
  readonly config: Config
  status(): LoadedConfigStatus
  /**
   * Reload when the file's text changes. Watches its directory: editors replace the file (a rename),
   * and Kubernetes swaps the `..data` symlink of a mounted ConfigMap, which a watch on the old file never
   * reports; and the file, for writes in place through another path (a single-file bind mount). Events
   * are debounced by `debounceMs`; text already loaded (or refused) is not reloaded again.
   */
  watch(debounceMs?: number): void
  /** Stop watching; reloads from now on are refused. */
  close(): void
}

/**
 * @example
 * const reloader = createConfigReloader({ initial: { config, hash }, file, clock, log, registry, prepare })
 * process.on('SIGHUP', () => void reloader.reloadFromFile())
 * reloader.watch()
 */
export function createConfigReloader(options: ConfigReloaderOptions): ConfigReloader {
  const { clock, log, file } = options
  let running = options.initial.config
  const seconds = () => Math.floor(clock.now() / 1000)
  let loaded: LoadedConfigStatus = {
    file,
    hash: options.initial.hash,
    loadedAt: seconds(),
    restartPending: [],
  }
  // The text last tried by the watcher, so a refused file is not retried (and logged) on every event.
  let lastTried = options.initial.hash
  const reloads = new Counter({
    name: 'gatehouse_config_reloads_total',
    help: 'Config reloads by result: ok (applied), error (refused, the running config kept)',
    labelNames: ['result'],
    registers: [options.registry],
  })
  reloads.inc({ result: 'ok' }, 0)
  reloads.inc({ result: 'error' }, 0)
  new Gauge({
    name: 'gatehouse_config_last_reload_success_timestamp_seconds',
    help: 'When the running config was loaded (start or last successful reload), seconds since the epoch',
    registers: [options.registry],
    collect() {
      this.set(loaded.loadedAt)
    },
  })
  new Gauge({
    name: 'gatehouse_config_info',
    help: 'Always 1; hash: sha256 of the running config file',
    labelNames: ['hash'],
    registers: [options.registry],
    collect() {
      this.reset()
      this.set({ hash: loaded.hash }, 1)
    },
  })
  new Gauge({
    name: 'gatehouse_config_restart_pending',
    help: 'Config keys changed in the file that apply only after a restart',
    registers: [options.registry],
    collect() {
      this.set(loaded.restartPending.length)
    },
  })

  let queue: Promise<unknown> = Promise.resolve()
  const serial = <T>(task: () => Promise<T>): Promise<T> => {
    const p = queue.then(task, task)
    queue = p.catch(() => {})
    return p
  }

  function refused(err: unknown, hash: string): ReloadResult {
    const problems: ConfigProblem[] =
      err instanceof ConfigError
        ? err.problems
        : [{ path: '(apply)', message: err instanceof Error ? err.message : String(err) }]
    reloads.inc({ result: 'error' })
    // One line: where and why. ConfigError never carries a secret's value (validate.ts, resolveSecret).
    log.error(
      { event: 'config_reload_failed', file: file ?? '(api)', hash, problems },
      `config reload refused, the running config is kept: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`,
    )
    return { result: 'error', hash, changed: [], restartPending: loaded.restartPending, problems }
  }

  let closed = false
  async function apply(next: Config, hash: string): Promise<ReloadResult> {
    try {
      // A SIGHUP while draining must not open pools the shutdown would not close.
      if (closed) throw new Error('the gateway is shutting down')
      const restartPending = restartOnlyChanges(running, next)
      const effective = withRunningRestartOnly(running, next)
      const swap = await options.prepare(effective, running)
      const changed = changedKeys(running, effective)
      swap()
      running = effective
      loaded = { file, hash, loadedAt: seconds(), restartPending }
      reloads.inc({ result: 'ok' })
      log.info({ event: 'config_reloaded', file: file ?? '(api)', hash, changed }, 'config reloaded')
      if (restartPending.length > 0) {
        log.warn(
          { event: 'config_restart_pending', file: file ?? '(api)', keys: restartPending },
          `config reloaded, but these keys keep their running value until a restart: ${restartPending.join(', ')}`,
        )
      }
      return { result: 'ok', hash, changed, restartPending, problems: [] }
    } catch (err) {
      return refused(err, hash)
    }
  }

  async function fromFile(): Promise<ReloadResult> {
    if (file === undefined) throw new TypeError('reloadFromFile: the gateway was not started from a file')
    let text: string
    try {
      text = readConfigText(file)
    } catch (err) {
      return refused(err, '')
    }
    const hash = configHash(text)
    lastTried = hash
    let config: Config
    try {
      config = parseConfigText(text, file).config
    } catch (err) {
      return refused(err, hash)
    }
    return apply(config, hash)
  }

  let watcher: FSWatcher | undefined
  // The file itself too: a write in place through another path to the same file (a container's
  // single-file bind mount, a hard link) reaches a watch on the file, not one on this directory.
  let fileWatcher: FSWatcher | undefined
  let timer: NodeJS.Timeout | undefined
  let debounce = 200
  const schedule = () => {
    clearTimeout(timer)
    timer = setTimeout(onChange, debounce)
    timer.unref()
  }
  // Again after every change: a rename or a symlink swap puts another file behind the name.
  const watchFile = () => {
    fileWatcher?.close()
    fileWatcher = undefined
    if (closed) return
    try {
      fileWatcher = watch(resolve(file!), { persistent: false }, schedule)
      fileWatcher.on('error', () => fileWatcher?.close())
    } catch {
      // Not there at this moment (between an unlink and a rename): the directory's watch sees it come.
    }
  }
  const onChange = () => {
    watchFile()
    let hash: string
    try {
      hash = configHash(readFileSync(file!, 'utf8'))
    } catch {
      // Between an editor's unlink and rename, or a symlink swap: the next event brings the file.
      return
    }
    if (hash === loaded.hash || hash === lastTried) return
    // Set now, not when the queued reload runs: a second event meanwhile must not queue another.
    lastTried = hash
    void serial(fromFile)
  }

  return {
    reload: (config, hash) => serial(() => apply(config, hash ?? configHash(JSON.stringify(config)))),
    reloadFromFile: () => serial(fromFile),
    get config() {
      return running
    },
    status: () => loaded,
    watch(debounceMs = 200) {
      if (file === undefined || watcher !== undefined || closed) return
      debounce = debounceMs
      try {
        watcher = watch(dirname(resolve(file)), { persistent: false }, schedule)
      } catch (err) {
        log.warn(
          { event: 'config_watch_failed', file, err: (err as Error).message },
          'cannot watch the config file: reload with SIGHUP',
        )
        return
      }
      watcher.on('error', (err) => {
        log.warn(
          { event: 'config_watch_failed', file, err: err.message },
          'stopped watching the config file: reload with SIGHUP',
        )
        watcher?.close()
      })
      watchFile()
    },
    close() {
      closed = true
      clearTimeout(timer)
      watcher?.close()
      watcher = undefined
      fileWatcher?.close()
      fileWatcher = undefined
    },
  }
}

/**
 * Counts the requests each generation of the swappable parts serves, so the parts a reload replaced
 * (the upstream pool) are closed only once every request that started on them has ended. Listens to
 * the server's own `request` and `upgrade` events: the gateway reads the parts synchronously when the
 * request arrives, in the same turn as these listeners, so both see the same generation.
 */
export function trackGenerations(server: Server): { next(): Promise<void> } {
  type Generation = { active: number; idle: (() => void) | undefined }
  let current: Generation = { active: 0, idle: undefined }
  const enter = (done: EventEmitter) => {
    const g = current
    g.active++
    done.once('close', () => {
      if (--g.active === 0) g.idle?.()
    })
  }
  server.on('request', (_req, res: EventEmitter) => enter(res))
  server.on('upgrade', (_req, socket: EventEmitter) => enter(socket))
  return {
    /** Starts a new generation; resolves once the previous one has no request left. */
    next() {
      const old = current
      current = { active: 0, idle: undefined }
      return old.active === 0
        ? Promise.resolve()
        : new Promise<void>((r) => {
            old.idle = r
          })
    },
  }
}
