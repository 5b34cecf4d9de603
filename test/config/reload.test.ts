/**
 * The parts of a config reload below the gateway (src/reload.ts): which keys wait for a restart, the
 * refusal of a prepare that fails, and the request generations that decide when a replaced upstream
 * pool may close. The gateway as a whole: test/integration/config-reload.test.ts.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { Registry } from 'prom-client'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { ConfigError, validateConfig } from '../../src/config/load.ts'
import type { Config } from '../../src/config/schema.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import {
  createConfigReloader,
  restartOnlyChanges,
  trackGenerations,
  withRunningRestartOnly,
} from '../../src/reload.ts'

function config(extra: Record<string, unknown> = {}): Config {
  return validateConfig({
    public_url: 'http://localhost:8080',
    upstream: 'http://127.0.0.1:3000',
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    ...extra,
  })
}

test('restart-only keys: the running value is kept, the rest of the new config applies', () => {
  const running = config()
  const next = config({
    listen: { port: 9999 },
    lifetimes: { ...DEV_LIFETIMES, session: { ttl: '1h', max_ttl: '1d' } },
    routes: [{ path: '/x', allow: 'anonymous' }],
  })
  assert.deepEqual(restartOnlyChanges(running, next), ['listen', 'lifetimes.session.max_ttl'])
  const effective = withRunningRestartOnly(running, next)
  assert.equal(effective.listen.port, running.listen.port)
  assert.equal(effective.lifetimes.session.max_ttl, running.lifetimes.session.max_ttl)
  assert.equal(effective.lifetimes.session.ttl, 3600, 'the session ttl applies live')
  assert.deepEqual(effective.routes, next.routes)
  assert.ok(Object.isFrozen(effective) && Object.isFrozen(effective.lifetimes.session))
  assert.deepEqual(restartOnlyChanges(running, config()), [])
  assert.deepEqual(withRunningRestartOnly(running, config()), running)
})

test("the provider's issuer and client id wait for a restart (sessions belong to them); its other keys apply", () => {
  const running = config()
  const next = config({
    provider: {
      issuer: 'http://127.0.0.1:10/other',
      client_id: 'other',
      client_secret: { env: 'S2' },
      timeout: 9,
    },
  })
  assert.deepEqual(restartOnlyChanges(running, next), ['provider.issuer', 'provider.client_id'])
  const effective = withRunningRestartOnly(running, next)
  assert.equal(effective.provider.issuer, running.provider.issuer)
  assert.equal(effective.provider.client_id, 'c')
  assert.deepEqual(effective.provider.client_secret, { env: 'S2' })
  assert.equal(effective.provider.timeout, 9)
})

test('turning apps on or off waits for a restart, upstream and routes with it (never both, never neither)', () => {
  const single = config({ routes: [{ path: '/x', allow: 'anonymous' }] })
  const withApps = config({
    upstream: undefined,
    apps: [{ name: 'wiki', host: 'wiki.localhost', upstream: 'http://127.0.0.1:4000' }],
  })
  assert.deepEqual(restartOnlyChanges(single, withApps), ['apps'])
  const on = withRunningRestartOnly(single, withApps)
  assert.equal(on.apps, undefined)
  assert.equal(on.upstream, single.upstream, 'the running upstream keeps serving')
  assert.deepEqual(on.routes, single.routes)
  const off = withRunningRestartOnly(withApps, single)
  assert.deepEqual(off.apps, withApps.apps)
  assert.equal(off.upstream, undefined, 'no top-level upstream beside the running apps')
  assert.deepEqual(off.routes, [])
})

test('a session ttl above the running max_ttl (a new max_ttl waits for a restart) is refused', () => {
  const running = config({ lifetimes: { ...DEV_LIFETIMES, session: { ttl: '1h', max_ttl: '1d' } } })
  const next = config({ lifetimes: { ...DEV_LIFETIMES, session: { ttl: '2d', max_ttl: '7d' } } })
  assert.throws(
    () => withRunningRestartOnly(running, next),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.problems[0]?.path === 'lifetimes.session.ttl' &&
      /running lifetimes\.session\.max_ttl \(86400s/.test(err.problems[0].message),
  )
})

test('a prepare that throws refuses the reload: nothing is swapped, the error is counted', async () => {
  const registry = new Registry()
  let swapped = 0
  const reloader = createConfigReloader({
    initial: { config: config(), hash: 'h0' },
    clock: createFrozenClock(1_000_000),
    log: silentLogger,
    registry,
    async prepare(next) {
      if (next.routes.length > 0) throw new Error('client key: not a private key')
      return () => {
        swapped++
      }
    },
  })
  const bad = await reloader.reload(config({ routes: [{ path: '/x', allow: 'anonymous' }] }), 'h1')
  assert.equal(bad.result, 'error')
  assert.deepEqual(bad.problems, [{ path: '(apply)', message: 'client key: not a private key' }])
  assert.equal(swapped, 0)
  assert.equal(reloader.status().hash, 'h0')
  assert.deepEqual(reloader.config.routes, [])
  const good = await reloader.reload(config({ log: { level: 'debug' } }), 'h2')
  assert.equal(good.result, 'ok')
  assert.deepEqual(good.changed, ['log'])
  assert.equal(swapped, 1)
  assert.equal(reloader.status().hash, 'h2')
  const text = await registry.metrics()
  assert.match(text, /gatehouse_config_reloads_total\{result="ok"\} 1/)
  assert.match(text, /gatehouse_config_reloads_total\{result="error"\} 1/)
  assert.match(text, /gatehouse_config_last_reload_success_timestamp_seconds 1000\n/)
  // Once the gateway is closing (a SIGHUP during the drain), nothing new is built.
  reloader.close()
  const late = await reloader.reload(config({ log: { level: 'warn' } }), 'h3')
  assert.equal(late.result, 'error')
  assert.equal(swapped, 1)
})

test('request generations: the previous generation ends when its last request has ended, not before', async () => {
  let release: (() => void) | undefined
  const server = createServer((req, res) => {
    if (req.url === '/hold') release = () => res.end('held')
    else res.end('at once')
  })
  const generations = trackGenerations(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  try {
    // Nothing in flight: at once.
    await generations.next()
    const held = new Promise<string>((resolve, reject) => {
      request(`${url}/hold`, (res) => {
        let body = ''
        res.on('data', (d) => {
          body += d
        })
        res.on('end', () => resolve(body))
      })
        .on('error', reject)
        .end()
    })
    while (release === undefined) await new Promise((r) => setImmediate(r))
    let ended = false
    const previous = generations.next().then(() => {
      ended = true
    })
    // A request of the new generation does not hold the old one, nor is held by it.
    assert.equal(await (await fetch(`${url}/other`)).text(), 'at once')
    await new Promise((r) => setImmediate(r))
    assert.equal(ended, false, 'the held request still belongs to the previous generation')
    release()
    assert.equal(await held, 'held')
    await previous
    assert.equal(ended, true)
  } finally {
    server.closeAllConnections()
    server.close()
  }
})
