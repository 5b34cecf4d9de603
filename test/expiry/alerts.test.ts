/**
 * Expiry alerts through a whole gateway: thresholds crossed by jumping a frozen clock, each sent once to
 * a real webhook on loopback, none sent again after a restart, a failed send tried again later. Own
 * signing keys rotate on schedule and never alert.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createAlerter } from '../../src/expiry/alerts.ts'
import { clientSecretEntry } from '../../src/expiry/inventory.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { dropSchema, POSTGRES_URL, postgresUnavailable, uniqueName } from '../helpers/shared-services.ts'

const DAY = 86_400
const SECRET = 'alerts-test-secret-0123456789-abcdefghijkl'
const T0 = Date.UTC(2026, 0, 1) / 1000

interface Hook {
  url: string
  server: Server
  bodies: Array<Record<string, unknown>>
  attempts: number
  failWith: number | undefined
  close(): Promise<void>
}

async function startWebhook(): Promise<Hook> {
  const hook = { bodies: [], attempts: 0, failWith: undefined } as unknown as Hook
  hook.server = createServer((req, res) => {
    let text = ''
    req.on('data', (d) => {
      text += d
    })
    req.on('end', () => {
      hook.attempts++
      if (hook.failWith !== undefined) {
        res.writeHead(hook.failWith).end()
        return
      }
      hook.bodies.push(JSON.parse(text) as Record<string, unknown>)
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
    })
  })
  await new Promise<void>((r) => hook.server.listen(0, '127.0.0.1', r))
  hook.url = `http://127.0.0.1:${(hook.server.address() as AddressInfo).port}/hooks/gatehouse`
  hook.close = () =>
    new Promise((r) => {
      hook.server.closeAllConnections()
      hook.server.close(() => r())
    })
  return hook
}

/**
 * A gateway whose client secret expires 40 days after T0, alerting a webhook at 30, 7 and 1 days; `start`
 * starts one more instance on the same config (restarts, or a second instance on a shared store).
 */
function alertingGateway(
  hookUrl: string,
  clock: ReturnType<typeof createFrozenClock>,
  extra: Record<string, unknown> = {},
) {
  const config = validateConfig({
    public_url: 'http://localhost:8080',
    upstream: 'http://127.0.0.1:9',
    data_dir: mkdtempSync(join(tmpdir(), 'gh-alerts-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: {
      issuer: 'http://127.0.0.1:9/idp',
      client_id: 'entra-app',
      client_secret: { env: 'S' },
      client_secret_expires: new Date((T0 + 40 * DAY) * 1000).toISOString(),
    },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
    alerts: { webhook: { env: 'HOOK' }, thresholds: ['30d', '7d', '1d'] },
    ...extra,
  })
  return {
    start: () =>
      startGateway(config, {
        baseDir: process.cwd(),
        log: silentLogger,
        clock,
        admin: false,
        env: { S: SECRET, HOOK: hookUrl },
        probeTLS: false,
      }),
  }
}

describe('expiry alerts', () => {
  let hook: Hook
  before(async () => {
    hook = await startWebhook()
  })
  after(() => hook.close())

  it('sends each threshold once, keeps that across restarts, retries a failed send, never alerts on own keys', async () => {
    const clock = createFrozenClock(T0 * 1000)
    const { start } = alertingGateway(hook.url, clock)
    const sent = () => hook.bodies.map((b) => `${(b['credential'] as { id: string }).id} ${b['threshold']}`)
    const at = (days: number) => clock.set((T0 + days * DAY) * 1000)

    let gateway = await start()
    try {
      const firstKeys = gateway.services.keyRing.list().map((k) => k.kid)
      const firstCurrent = gateway.services.keyRing.list().find((k) => k.state === 'current')!.kid
      await gateway.expiry.run()
      assert.deepEqual(sent(), [], '40 days left: nothing yet')

      at(11) // 29 days left
      await gateway.expiry.run()
      await gateway.expiry.run()
      assert.deepEqual(sent(), ['client_secret:entra-app 30d'], 'sent once, not twice')
      const body = hook.bodies[0]!
      assert.equal(body['type'], 'gatehouse.credential_expiry')
      assert.equal(body['status'], 'expiring')
      assert.equal(body['threshold_seconds'], 30 * DAY)
      assert.deepEqual(
        { ...(body['credential'] as object), detail: undefined },
        {
          id: 'client_secret:entra-app',
          kind: 'client_secret',
          name: 'entra-app',
          owner: 'operator',
          where: 'config provider.client_secret_expires',
          expires_at: '2026-02-10T00:00:00Z',
          expires_in_seconds: 29 * DAY,
          detail: undefined,
        },
      )
      assert.match(String(body['text']), /client secret "entra-app" \(owner: operator\) expires in 29d/)
      assert.ok(!JSON.stringify(hook.bodies).includes(SECRET), 'no secret in an alert')

      at(34) // 6 days left: the 7d threshold
      await gateway.expiry.run()
      assert.deepEqual(sent(), ['client_secret:entra-app 30d', 'client_secret:entra-app 7d'])

      // Restart on the same data dir: nothing is sent again.
      await gateway.close()
      gateway = await start()
      await gateway.expiry.run()
      assert.deepEqual(sent(), ['client_secret:entra-app 30d', 'client_secret:entra-app 7d'])

      // 12 hours left, and the webhook fails: recorded, not retried before its backoff, then sent.
      hook.failWith = 503
      clock.set((T0 + 39.5 * DAY) * 1000)
      const failed = await gateway.expiry.run()
      assert.deepEqual(
        failed.alerts.map((a) => [a.credential, a.thresholdSeconds, a.result, a.error]),
        [['client_secret:entra-app', DAY, 'failed', 'webhook answered HTTP 503']],
      )
      assert.equal(hook.attempts, 3)
      clock.advance(30_000)
      await gateway.expiry.run()
      assert.equal(hook.attempts, 3, 'not retried within its backoff (1 min)')
      // A restart does not forget it either.
      await gateway.close()
      gateway = await start()
      hook.failWith = undefined
      clock.advance(31_000)
      await gateway.expiry.run()
      assert.deepEqual(sent(), [
        'client_secret:entra-app 30d',
        'client_secret:entra-app 7d',
        'client_secret:entra-app 1d',
      ])

      at(41) // expired
      await gateway.expiry.run()
      await gateway.expiry.run()
      assert.equal(sent().at(-1), 'client_secret:entra-app expired')
      assert.equal(hook.bodies.at(-1)!['status'], 'expired')
      assert.equal(sent().length, 4)

      // 41 days passed with 30-day signing keys: they rotated on schedule and never alerted.
      const keys = gateway.services.keyRing.list()
      assert.ok(
        keys.some((k) => !firstKeys.includes(k.kid)),
        'a key made since',
      )
      assert.equal(
        keys.find((k) => k.kid === firstCurrent)?.state,
        'retired',
        'the first signing key was replaced',
      )
      assert.ok(!sent().some((s) => s.startsWith('signing_key:')))

      const metrics = await gateway.metrics.registry.metrics()
      assert.match(metrics, /gatehouse_expiry_alerts_total\{threshold="1d",result="sent"\} 1/)
      assert.match(
        metrics,
        /gatehouse_credential_expiry_timestamp_seconds\{kind="client_secret",name="entra-app",owner="operator"\} 1770681600/,
      )
      assert.match(
        metrics,
        /gatehouse_credential_expiry_seconds_remaining\{kind="client_secret",name="entra-app",owner="operator"\} -86400/,
      )
    } finally {
      await gateway.close()
    }
  })

  it('re-arms a renewed credential, and speaks Slack when asked (escaped)', async () => {
    const store = createMemoryStore()
    const before = hook.bodies.length
    const alerter = createAlerter({
      store,
      thresholdsSeconds: [30 * DAY, 7 * DAY],
      webhook: { url: hook.url, format: 'slack' },
      log: silentLogger,
    })
    const now = T0
    const entry = { ...clientSecretEntry('<app>', now + 5 * DAY, now) }
    const first = await alerter.check([entry], now)
    assert.deepEqual(
      first.map((a) => [a.thresholdSeconds, a.result]),
      [[7 * DAY, 'sent']],
      'the tightest crossed threshold only',
    )
    assert.deepEqual(
      (await store.listAlerts()).map((a) => [a.thresholdSeconds, a.sentAt]),
      [
        [7 * DAY, now],
        [30 * DAY, now],
      ],
      'the wider one is marked sent with it',
    )
    const slack = hook.bodies.at(-1)!
    assert.deepEqual(Object.keys(slack), ['text'])
    assert.match(String(slack['text']), /client secret "&lt;app&gt;"/)
    // Renewed for a year: records dropped; expiring again later alerts again.
    const renewed = clientSecretEntry('<app>', now + 365 * DAY, now)
    assert.deepEqual(await alerter.check([renewed], now + 60), [])
    assert.deepEqual(await store.listAlerts(), [])
    const again = await alerter.check([clientSecretEntry('<app>', now + 365 * DAY, now)], now + 360 * DAY)
    assert.deepEqual(
      again.map((a) => a.thresholdSeconds),
      [7 * DAY],
    )
    assert.equal(hook.bodies.length, before + 2)
  })
})

describe('expiry alerts with many instances on PostgreSQL', { skip: await postgresUnavailable() }, () => {
  const schema = uniqueName('gh_test_alerts')
  let hook: Hook
  before(async () => {
    hook = await startWebhook()
  })
  after(async () => {
    await hook.close()
    await dropSchema(schema)
  })

  it('two instances checking at the same moment send each alert once', async () => {
    const clock = createFrozenClock(T0 * 1000)
    const { start } = alertingGateway(hook.url, clock, { store: { postgres: POSTGRES_URL, schema } })
    const a = await start()
    const b = await start()
    try {
      const sent = () => hook.bodies.map((x) => `${(x['credential'] as { id: string }).id} ${x['threshold']}`)
      for (const days of [11, 34, 39.5, 41]) {
        clock.set((T0 + days * DAY) * 1000)
        await Promise.all([a.expiry.run(), b.expiry.run(), a.expiry.run(), b.expiry.run()])
        // A round skipped by one instance is done by the other; a later round by either finds it sent.
        await Promise.all([a.expiry.run(), b.expiry.run()])
      }
      assert.deepEqual(sent(), [
        'client_secret:entra-app 30d',
        'client_secret:entra-app 7d',
        'client_secret:entra-app 1d',
        'client_secret:entra-app expired',
      ])
    } finally {
      await a.close()
      await b.close()
    }
  })
})
