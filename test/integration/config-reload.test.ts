/**
 * Reloading the config without a restart (src/reload.ts): a gateway started from a config file, a real
 * OpenID provider and a recording upstream, with clients sending requests over keep-alive all along.
 * A good file applies for the requests that start after it (none of those in flight fails), a bad one is
 * refused with one log line and a metric, sessions survive, and SIGHUP and a change of the file (an
 * editor's rename, a Kubernetes ConfigMap's symlink swap) both trigger it.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { linkSync, mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import type { Logger } from '../../src/core/ports.ts'
import { loadConfigForReload } from '../../src/reload.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { CLI_MAIN } from '../helpers/cli.ts'
import { createCookieClient } from '../helpers/cookie-client.ts'
import { installTestHosts } from '../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signIn, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SESSION_OLD = 'reload-test-session-secret-old-0123456789abcdef'
const SESSION_NEW = 'reload-test-session-secret-new-0123456789abcdef'

interface Logged {
  level: string
  obj: Record<string, unknown>
  msg: string | undefined
}

function recordingLogger(lines: Logged[]): Logger {
  const at = (level: string) => (obj: object, msg?: string) =>
    lines.push({ level, obj: obj as Record<string, unknown>, msg })
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

interface FileOptions {
  port: number
  upstream: string
  issuer: string
  clientId: string
  dataDir: string
  /** Who may read /reports/*. */
  reports: 'anonymous' | 'admins'
  /** Environment variables holding session.secrets, first signs. */
  secrets?: string[]
  /** Top-level YAML appended as is. */
  extra?: string
  listenPort?: number
  logLevel?: string
}

function configText(o: FileOptions): string {
  const allow = o.reports === 'anonymous' ? 'anonymous' : '{ groups: [admins] }'
  return `public_url: http://127.0.0.1:${o.port}
upstream: ${o.upstream}
data_dir: ${o.dataDir}
listen: { host: 127.0.0.1, port: ${o.listenPort ?? o.port} }
admin: { host: 127.0.0.1, port: 0 }
provider:
  issuer: ${o.issuer}
  client_id: ${o.clientId}
  client_secret: { env: GH_CLIENT_SECRET }
  scopes: [openid, email, profile, groups, offline_access]
session:
  secrets: [${(o.secrets ?? ['GH_SESSION_OLD']).map((e) => `{ env: ${e} }`).join(', ')}]
lifetimes:
  session: { ttl: 12h, max_ttl: 7d }
  refresh: { ttl: 7d, max_ttl: 30d }
  api_token: { ttl: 30d, max_ttl: 90d }
  derived_token: { ttl: 1h, max_ttl: 1d }
  signing_key: { ttl: 30d, max_ttl: 180d }
routes:
  - { path: /reports/*, allow: ${allow} }
shutdown: { drain: 1s }
log: { level: ${o.logLevel ?? 'error'} }
${o.extra ?? ''}
`
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/** Polls `check` until it is true; fails after `tries` (bounded, asserts no duration). */
async function until(check: () => Promise<boolean> | boolean, what: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  assert.fail(`gave up waiting: ${what}`)
}

interface Outcome {
  status: number | undefined
  error: string | undefined
  /** The phase the test was in when the request started. */
  phase: string
}

/**
 * `total` requests to `url`, `concurrency` at a time over keep-alive connections. Each outcome records
 * the phase (`phase.current`) at the moment its request started.
 */
function trafficLoop(url: string, headers: Record<string, string>, phase: { current: string }, total = 300) {
  const outcomes: Outcome[] = []
  let started = 0
  const worker = async () => {
    while (started < total) {
      started++
      const at = phase.current
      try {
        const r = await fetch(url, { headers: { accept: 'application/json', ...headers } })
        await r.arrayBuffer()
        outcomes.push({ status: r.status, error: undefined, phase: at })
      } catch (err) {
        outcomes.push({ status: undefined, error: String((err as Error).cause ?? err), phase: at })
      }
    }
  }
  const done = Promise.all([worker(), worker(), worker()]).then(() => outcomes)
  return { outcomes, done }
}

function assertNoFailure(outcomes: readonly Outcome[]) {
  const failed = outcomes.filter((o) => o.error !== undefined || (o.status ?? 0) >= 500)
  assert.deepEqual(failed, [], 'no request failed during the reload')
}

async function metric(gateway: Gateway, line: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text()
  return text.split('\n').find((l) => line.test(l))
}

describe('config reload under traffic, against a real OpenID provider', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let base: string
  let port: number
  let file: string
  let dataDir: string
  let cookie: string
  const lines: Logged[] = []
  const write = (o: Partial<FileOptions>) => {
    const text = configText({
      port,
      upstream: upstream.url,
      issuer: idp.issuer,
      clientId: idp.clientId,
      dataDir,
      reports: 'anonymous',
      ...o,
    })
    writeFileSync(file, text)
    return text
  }

  before(async () => {
    port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`], accessTokenTtlSeconds: 3600 })
    upstream = await startRecordingUpstream()
    const dir = mkdtempSync(join(tmpdir(), 'gh-reload-'))
    dataDir = join(dir, 'data')
    file = join(dir, 'gatehouse.yaml')
    write({})
    const loaded = loadConfigForReload(file)
    gateway = await startGateway(loaded.config, {
      baseDir: loaded.baseDir,
      configFile: file,
      configHash: loaded.hash,
      log: recordingLogger(lines),
      admin: { host: '127.0.0.1', port: 0 },
      env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_OLD: SESSION_OLD, GH_SESSION_NEW: SESSION_NEW },
    })
    // A real sign-in through the provider's form: alice is in group admins.
    const browser = createCookieClient({ fetch: browserFetch })
    const first = await browser.request(`${base}/dashboard`, { headers: { accept: 'text/html' } })
    assert.equal(first.status, 302)
    const callback = await signIn(
      browser,
      first.headers.get('location')!,
      DEMO_USER.username,
      DEMO_USER.password,
      idp.issuer,
    )
    const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
    assert.equal(done.response.status, 200)
    cookie = browser
      .cookies(base)
      .filter((c) => c.name.startsWith('gatehouse'))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    assert.notEqual(cookie, '')
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  test('a good file changes a route from anonymous to restricted: applied to the requests after it, none fails, the session still works', async () => {
    const phase = { current: 'before' }
    const reports = `${base}/reports/q1`
    assert.equal((await fetch(reports, { headers: { accept: 'application/json' } })).status, 200)
    const anonymous = trafficLoop(reports, {}, phase)
    const alice = trafficLoop(reports, { cookie }, phase)
    await until(() => anonymous.outcomes.length >= 100, 'traffic before the reload')
    const seenBefore = upstream.requests.length
    const text = write({ reports: 'admins' })
    phase.current = 'during'
    const result = await gateway.reloadFromFile()
    phase.current = 'after'
    assert.equal(result.result, 'ok', JSON.stringify(result.problems))
    assert.equal(result.hash, sha256(text))
    assert.deepEqual(result.changed, ['routes'])
    assert.deepEqual(result.restartPending, [])
    const [anon, signedIn] = await Promise.all([anonymous.done, alice.done])
    assertNoFailure(anon)
    assertNoFailure(signedIn)
    assert.ok(
      anon.some((o) => o.phase === 'before' && o.status === 200),
      'anonymous was let through before',
    )
    const after = anon.filter((o) => o.phase === 'after')
    assert.ok(after.length > 0, 'requests started after the reload')
    assert.deepEqual([...new Set(after.map((o) => o.status))], [401], 'anonymous refused after the reload')
    assert.deepEqual(
      [...new Set(signedIn.map((o) => o.status))],
      [200],
      'the session cookie from before the reload keeps working (alice is in admins)',
    )
    assert.ok(upstream.requests.length > seenBefore)
    // Said in the log, the metrics and /status.json.
    const logged = lines.find((l) => l.obj['event'] === 'config_reloaded')
    assert.deepEqual(logged?.obj['changed'], ['routes'])
    assert.match((await metric(gateway, /^gatehouse_config_reloads_total\{result="ok"\}/)) ?? '', / 1$/)
    assert.match(
      (await metric(gateway, /^gatehouse_config_last_reload_success_timestamp_seconds /)) ?? '',
      / \d{10}$/,
    )
    assert.ok(await metric(gateway, new RegExp(`^gatehouse_config_info\\{hash="${sha256(text)}"\\} 1$`)))
    const status = (await (await fetch(`${gateway.adminUrl}/status.json`)).json()) as {
      config: { file: string; sha256: string; loaded_at: string; restart_pending: string[] }
    }
    assert.equal(status.config.file, file)
    assert.equal(status.config.sha256, sha256(text))
    assert.ok(!Number.isNaN(Date.parse(status.config.loaded_at)))
    assert.deepEqual(status.config.restart_pending, [])
    const page = await (await fetch(`${gateway.adminUrl}/status`)).text()
    assert.match(page, new RegExp(`sha256 <code>${sha256(text).slice(0, 16)}</code>`))
  })

  test('a bad file (schema error, missing secret) is refused: the running config stays, one error line, the metric counts it', async () => {
    const running = write({ reports: 'admins' })
    assert.equal((await gateway.reloadFromFile()).result, 'ok')
    const phase = { current: 'before' }
    const reports = `${base}/reports/q2`
    const anonymous = trafficLoop(reports, {}, phase)
    await until(() => anonymous.outcomes.length >= 100, 'traffic before the reload')
    const from = lines.length
    writeFileSync(file, running.replace('allow: { groups: [admins] }', 'allow: everyone'))
    const result = await gateway.reloadFromFile()
    assert.equal(result.result, 'error')
    assert.deepEqual(
      result.problems.map((p) => p.path),
      ['routes[0].allow'],
    )
    const errors = lines.slice(from).filter((l) => l.level === 'error')
    assert.equal(errors.length, 1, 'one error line')
    assert.equal(errors[0]!.obj['event'], 'config_reload_failed')
    assert.equal(errors[0]!.obj['file'], file)
    assert.match(errors[0]!.msg ?? '', /the running config is kept: routes\[0\]\.allow: expected "anonymous"/)
    assert.match((await metric(gateway, /^gatehouse_config_reloads_total\{result="error"\}/)) ?? '', / 1$/)

    // A secret the new file names but the environment lacks: refused too, naming where, not a value.
    write({ reports: 'anonymous', secrets: ['GH_SESSION_MISSING'] })
    const missing = await gateway.reloadFromFile()
    assert.equal(missing.result, 'error')
    assert.deepEqual(
      missing.problems.map((p) => p.path),
      ['session.secrets[0]'],
    )
    assert.match((await metric(gateway, /^gatehouse_config_reloads_total\{result="error"\}/)) ?? '', / 2$/)
    phase.current = 'after'
    const outcomes = await anonymous.done
    assertNoFailure(outcomes)
    assert.deepEqual([...new Set(outcomes.map((o) => o.status))], [401], 'the running config kept throughout')
    const status = (await (await fetch(`${gateway.adminUrl}/status.json`)).json()) as {
      config: { sha256: string }
    }
    assert.equal(status.config.sha256, sha256(running), 'status names the running file, not the refused one')
    const logText = JSON.stringify(lines)
    for (const secret of [SESSION_OLD, SESSION_NEW, idp.clientSecret])
      assert.ok(!logText.includes(secret), 'no secret in the log')
  })

  test('a restart-only key (listen) keeps its running value, the rest applies, and a warning names it', async () => {
    const other = await freePort()
    const from = lines.length
    const text = write({ reports: 'anonymous', listenPort: other })
    const result = await gateway.reloadFromFile()
    assert.equal(result.result, 'ok')
    assert.deepEqual(result.restartPending, ['listen'])
    assert.deepEqual(result.changed, ['routes'], 'listen is not among what changed')
    const warn = lines.slice(from).find((l) => l.obj['event'] === 'config_restart_pending')
    assert.deepEqual(warn?.obj['keys'], ['listen'])
    assert.match(warn?.msg ?? '', /keep their running value until a restart: listen/)
    assert.equal((await fetch(`${base}/reports/q3`, { headers: { accept: 'application/json' } })).status, 200)
    await assert.rejects(fetch(`http://127.0.0.1:${other}/reports/q3`), 'nothing listens on the new port')
    assert.match((await metric(gateway, /^gatehouse_config_restart_pending /)) ?? '', / 1$/)
    const status = (await (await fetch(`${gateway.adminUrl}/status.json`)).json()) as {
      config: { sha256: string; restart_pending: string[] }
    }
    assert.deepEqual(status.config.restart_pending, ['listen'])
    assert.equal(status.config.sha256, sha256(text))
    // Back to the file it runs as: nothing pending any more.
    write({ reports: 'anonymous' })
    assert.deepEqual((await gateway.reloadFromFile()).restartPending, [])
  })

  test('a new upstream URL: requests after the reload go to it, none fails, a request in flight on the old one completes', async () => {
    const next = await startRecordingUpstream()
    let release: (() => void) | undefined
    // The old upstream: answers at once, except /reports/slow, which waits for release().
    const slow = createServer((req, res) => {
      if (req.url !== '/reports/slow') return res.end('old upstream')
      release = () => res.end('slow answer')
    })
    slow.listen(0, '127.0.0.1')
    await once(slow, 'listening')
    const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}`
    try {
      write({ upstream: slowUrl })
      assert.equal((await gateway.reloadFromFile()).result, 'ok')
      const inFlight = fetch(`${base}/reports/slow`, { headers: { accept: 'application/json' } })
      await until(() => release !== undefined, 'the slow request reached its upstream')
      const phase = { current: 'before' }
      write({ upstream: next.url })
      const traffic = trafficLoop(`${base}/reports/q4`, { cookie }, phase)
      await until(() => traffic.outcomes.length >= 50, 'traffic before the reload')
      const result = await gateway.reloadFromFile()
      phase.current = 'after'
      assert.equal(result.result, 'ok')
      assert.deepEqual(result.changed, ['upstream'])
      const outcomes = await traffic.done
      assertNoFailure(outcomes)
      const after = outcomes.filter((o) => o.phase === 'after' && o.status === 200).length
      assert.ok(after > 0)
      assert.ok(
        next.requests.filter((r) => r.url === '/reports/q4').length >= after,
        'every request after the reload reached the new upstream',
      )
      release!()
      const r = await inFlight
      assert.equal(r.status, 200)
      assert.equal(await r.text(), 'slow answer', 'the request in flight finished on the old upstream')
    } finally {
      write({})
      await gateway.reloadFromFile()
      release?.()
      slow.closeAllConnections()
      slow.close()
      await next.close()
    }
  })

  test('session.secrets: a new first secret with the old one second keeps sessions; without the old one they end', async () => {
    const dashboard = `${base}/dashboard`
    const ask = () => fetch(dashboard, { headers: { accept: 'application/json', cookie } })
    assert.equal((await ask()).status, 200)
    write({ secrets: ['GH_SESSION_NEW', 'GH_SESSION_OLD'] })
    assert.equal((await gateway.reloadFromFile()).result, 'ok')
    const kept = await ask()
    assert.equal(kept.status, 200, 'a cookie sealed with the old secret, now listed second')
    write({ secrets: ['GH_SESSION_NEW'] })
    assert.equal((await gateway.reloadFromFile()).result, 'ok')
    const ended = await ask()
    assert.equal(ended.status, 401, 'the new list decides: the old secret is gone')
  })
})

/**
 * A gateway on `file`, watching it, with anonymous requests to /reports/* as the behaviour to observe;
 * `place` puts a new text where `file` reads it, the way an editor or kubelet does.
 */
async function watchedGateway(file: string, place: (text: string) => void) {
  const port = await freePort()
  const idp = await startTestIdP({ redirectUris: [`http://127.0.0.1:${port}/oauth2/callback`] })
  const upstream = await startRecordingUpstream()
  const dataDir = mkdtempSync(join(tmpdir(), 'gh-reload-data-'))
  const text = (reports: 'anonymous' | 'admins') =>
    configText({ port, upstream: upstream.url, issuer: idp.issuer, clientId: idp.clientId, dataDir, reports })
  const write = (reports: 'anonymous' | 'admins') => place(text(reports))
  write('anonymous')
  const loaded = loadConfigForReload(file)
  const lines: Logged[] = []
  const gateway = await startGateway(loaded.config, {
    baseDir: loaded.baseDir,
    configFile: file,
    configHash: loaded.hash,
    watchConfig: true,
    log: recordingLogger(lines),
    admin: false,
    env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_OLD: SESSION_OLD },
  })
  const status = async () =>
    (await fetch(`http://127.0.0.1:${port}/reports/x`, { headers: { accept: 'application/json' } })).status
  return {
    status,
    write,
    lines,
    async close() {
      await gateway.close()
      await upstream.close()
      await idp.close()
    },
  }
}

test('file watch: an editor that writes a new file and renames it over the old one triggers a reload', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-reload-watch-'))
  const file = join(dir, 'gatehouse.yaml')
  const g = await watchedGateway(file, (text) => {
    const tmp = join(dir, '.gatehouse.yaml.swp')
    writeFileSync(tmp, text)
    renameSync(tmp, file)
  })
  try {
    assert.equal(await g.status(), 200)
    g.write('admins')
    await until(async () => (await g.status()) === 401, 'the restricted route applied')
    g.write('anonymous')
    await until(async () => (await g.status()) === 200, 'the anonymous route applied again')
    assert.equal(g.lines.filter((l) => l.obj['event'] === 'config_reloaded').length, 2)
  } finally {
    await g.close()
  }
})

test('file watch: a Kubernetes ConfigMap update (the ..data symlink swapped to a new directory) triggers a reload', async () => {
  // The layout kubelet mounts: gatehouse.yaml -> ..data/gatehouse.yaml, ..data -> ..<timestamp>/
  const dir = mkdtempSync(join(tmpdir(), 'gh-reload-k8s-'))
  const file = join(dir, 'gatehouse.yaml')
  let version = 0
  const g = await watchedGateway(file, (text) => {
    version++
    const target = `..v${version}`
    mkdirSync(join(dir, target))
    writeFileSync(join(dir, target, 'gatehouse.yaml'), text)
    symlinkSync(target, join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
    if (version === 1) symlinkSync(join('..data', 'gatehouse.yaml'), file)
  })
  try {
    assert.equal(await g.status(), 200)
    g.write('admins')
    await until(async () => (await g.status()) === 401, 'the restricted route applied')
  } finally {
    await g.close()
  }
})

test('file watch: a write in place through another path to the same file (a bind-mounted file, a hard link) triggers a reload', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gh-reload-link-'))
  const elsewhere = mkdtempSync(join(tmpdir(), 'gh-reload-host-'))
  const file = join(dir, 'gatehouse.yaml')
  const other = join(elsewhere, 'gatehouse.yaml')
  let linked = false
  const g = await watchedGateway(file, (text) => {
    if (!linked) {
      writeFileSync(file, text)
      linkSync(file, other)
      linked = true
    } else writeFileSync(other, text) // same inode, changed through a directory nobody watches
  })
  try {
    assert.equal(await g.status(), 200)
    g.write('admins')
    await until(async () => (await g.status()) === 401, 'the restricted route applied')
  } finally {
    await g.close()
  }
})

test('gatehouse start: SIGHUP reloads the file (with --no-watch, only SIGHUP does); a bad file is refused and logged; log.level applies', async () => {
  const port = await freePort()
  const idp = await startTestIdP({ redirectUris: [`http://127.0.0.1:${port}/oauth2/callback`] })
  const upstream = await startRecordingUpstream()
  const dir = mkdtempSync(join(tmpdir(), 'gh-reload-hup-'))
  const file = join(dir, 'gatehouse.yaml')
  const text = (reports: 'anonymous' | 'admins', logLevel = 'info') =>
    configText({
      port,
      upstream: upstream.url,
      issuer: idp.issuer,
      clientId: idp.clientId,
      dataDir: join(dir, 'data'),
      reports,
      logLevel,
    })
  writeFileSync(file, text('anonymous'))
  const child = spawn(process.execPath, [CLI_MAIN, 'start', '--config', file, '--no-watch'], {
    env: { ...process.env, GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_OLD: SESSION_OLD },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  child.stdout.on('data', (d) => {
    stdout += d
  })
  const status = async () =>
    (
      await fetch(`http://127.0.0.1:${port}/reports/x`, { headers: { accept: 'application/json' } }).catch(
        () => undefined,
      )
    )?.status
  const logged = (event: string) =>
    stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['event'] === event)
  try {
    await until(async () => (await status()) === 200, 'gatehouse start serving', 800)
    writeFileSync(file, text('admins'))
    assert.equal(await status(), 200, 'not reloaded before the signal')
    process.kill(child.pid!, 'SIGHUP')
    await until(async () => (await status()) === 401, 'the restricted route applied after SIGHUP')
    assert.equal(logged('config_reloaded').length, 1)
    assert.equal(logged('config_reloaded')[0]!['hash'], sha256(text('admins')))

    writeFileSync(file, 'routes: [')
    process.kill(child.pid!, 'SIGHUP')
    await until(() => logged('config_reload_failed').length === 1, 'the refusal logged')
    const failed = logged('config_reload_failed')[0]!
    assert.equal(failed['file'], file)
    assert.match(String(failed['msg']), /\(yaml\)/)
    assert.equal(await status(), 401, 'the running config kept')
    assert.equal(child.exitCode, null, 'still running')

    // log.level applies live: the next reload's info line is no longer written.
    writeFileSync(file, text('anonymous', 'warn'))
    process.kill(child.pid!, 'SIGHUP')
    await until(async () => (await status()) === 200, 'the anonymous route applied after SIGHUP')
    // A line written after it: once that is read, the info line would have been read before it.
    writeFileSync(file, 'routes: [')
    process.kill(child.pid!, 'SIGHUP')
    await until(() => logged('config_reload_failed').length === 2, 'the second refusal logged')
    assert.equal(logged('config_reloaded').length, 1, 'info lines are off at level warn')
    child.kill('SIGTERM')
    const [code] = await once(child, 'exit')
    assert.equal(code, 0)
  } finally {
    child.kill('SIGKILL')
    await upstream.close()
    await idp.close()
  }
})

test('config apps: an app’s routes and upstream reload live under traffic; a new app host waits for a restart', async () => {
  installTestHosts()
  const port = await freePort()
  const idp = await startTestIdP({ redirectUris: [`http://wiki.localhost:${port}/oauth2/callback`] })
  const [first, second] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
  const dataDir = mkdtempSync(join(tmpdir(), 'gh-reload-apps-'))
  const withApps = (wiki: { upstream: string; reports: 'anonymous' | 'admins'; host?: string }) =>
    validateConfig({
      public_url: `http://localhost:${port}`,
      data_dir: dataDir,
      listen: { host: '127.0.0.1', port },
      provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'GH_CLIENT_SECRET' } },
      session: { secrets: [{ env: 'GH_SESSION_OLD' }] },
      lifetimes: DEV_LIFETIMES,
      apps: [
        {
          name: 'wiki',
          host: wiki.host ?? 'wiki.localhost',
          upstream: wiki.upstream,
          routes: [
            {
              path: '/reports/*',
              allow: wiki.reports === 'anonymous' ? 'anonymous' : { groups: ['admins'] },
            },
          ],
        },
      ],
      shutdown: { drain: '1s' },
    })
  const lines: Logged[] = []
  const gateway = await startGateway(withApps({ upstream: first.url, reports: 'anonymous' }), {
    baseDir: process.cwd(),
    log: recordingLogger(lines),
    admin: false,
    env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_OLD: SESSION_OLD },
  })
  try {
    const reports = `http://wiki.localhost:${port}/reports/q`
    assert.equal((await fetch(reports, { headers: { accept: 'application/json' } })).status, 200)
    const phase = { current: 'before' }
    const traffic = trafficLoop(reports, {}, phase)
    await until(() => traffic.outcomes.length >= 100, 'traffic before the reload')
    const result = await gateway.reload(withApps({ upstream: second.url, reports: 'admins' }))
    phase.current = 'after'
    assert.equal(result.result, 'ok', JSON.stringify(result.problems))
    assert.deepEqual(result.changed, ['apps'])
    assert.deepEqual(result.restartPending, [])
    const outcomes = await traffic.done
    assertNoFailure(outcomes)
    const after = outcomes.filter((o) => o.phase === 'after')
    assert.ok(after.length > 0)
    assert.deepEqual([...new Set(after.map((o) => o.status))], [401], "the app's new route applies")
    const anonymousRoute = withApps({ upstream: second.url, reports: 'anonymous' })
    assert.equal((await gateway.reload(anonymousRoute)).result, 'ok')
    const before = second.requests.length
    assert.equal((await fetch(reports, { headers: { accept: 'application/json' } })).status, 200)
    assert.equal(second.requests.length, before + 1, "the app's new upstream is reached")

    const moved = await gateway.reload(
      withApps({ upstream: second.url, reports: 'anonymous', host: 'docs.localhost' }),
    )
    assert.equal(moved.result, 'ok')
    assert.deepEqual(moved.restartPending, ['apps'], 'a new host name needs the Host check rebuilt')
    assert.equal(
      (await fetch(reports, { headers: { accept: 'application/json' } })).status,
      200,
      'the running apps are kept',
    )
  } finally {
    await gateway.close()
    await first.close()
    await second.close()
    await idp.close()
  }
})
