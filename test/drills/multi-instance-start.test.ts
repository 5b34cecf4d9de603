/**
 * Both shared services down at start (Gatehouse 6): an instance starts from the local copy it wrote
 * while PostgreSQL answered, verifies and refuses writes; without a copy it stops with a clear error.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { type Clock, createFrozenClock, systemClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { openTokenServices } from '../../src/services.ts'
import { StoreUnavailableError } from '../../src/store/errors.ts'
import { dropSchema, POSTGRES_URL, postgresUnavailable, uniqueName } from '../helpers/shared-services.ts'
import { startTCPProxy, type TCPProxy } from '../helpers/tcp-proxy.ts'

const skip = await postgresUnavailable()

describe('PostgreSQL and Redis down at start', { skip }, () => {
  const schema = uniqueName('gh_start')
  let proxy: TCPProxy
  const env: Record<string, string> = { CS: 'x', SS: 'start-drill-session-secret-0123456789abcdef' }
  const configFor = (dataDir: string, extra: Record<string, unknown> = {}) =>
    validateConfig(
      {
        public_url: 'http://127.0.0.1:8080',
        upstream: 'http://127.0.0.1:9',
        data_dir: dataDir,
        provider: { issuer: 'http://127.0.0.1:9/_idp', client_id: 'c', client_secret: { env: 'CS' } },
        session: { secrets: [{ env: 'SS' }] },
        lifetimes: DEV_LIFETIMES,
        // Redis on a port where nothing listens: down from the start.
        store: {
          postgres: { env: 'PG_URL' },
          schema,
          redis: 'redis://127.0.0.1:9',
          redis_prefix: `${schema}:`,
          ...extra,
        },
      },
      'drill',
    )
  const open = (
    dataDir: string,
    allowLocalCopy: boolean,
    clock: Clock = systemClock,
    extra: Record<string, unknown> = {},
  ) =>
    openTokenServices(configFor(dataDir, extra), {
      baseDir: '/',
      clock,
      log: silentLogger,
      env,
      allowLocalCopy,
    })

  before(async () => {
    const u = new URL(POSTGRES_URL)
    proxy = await startTCPProxy({ host: u.hostname, port: Number(u.port || 5432) })
    u.port = String(proxy.port)
    env['PG_URL'] = u.href
  })

  after(async () => {
    await proxy.close()
    await dropSchema(schema)
  })

  test('starts from the local copy, verifies, refuses writes; without a copy it stops clearly', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gh-start-'))
    const first = await open(dataDir, true)
    const kept = await first.tokens.issue({ subject: 'kept' })
    const gone = await first.tokens.issue({ subject: 'gone' })
    await first.tokens.revoke(gone.record.jti, false)
    await first.tokens.refreshRevocations()
    await first.keyRing.reload()
    await first.close()

    proxy.cut()
    const second = await open(dataDir, true)
    assert.equal(second.storeConnected(), false)
    assert.equal((await second.tokens.verify(kept.token)).ok, true)
    const refused = await second.tokens.verify(gone.token)
    assert.equal(refused.ok, false)
    assert.equal(refused.ok === false && refused.reason, 'token revoked')
    await assert.rejects(
      second.tokens.issue({ subject: 'during-outage' }),
      (err: unknown) => err instanceof StoreUnavailableError && err.code === 'ERR_STORE_UNAVAILABLE',
    )
    await second.close()

    await assert.rejects(
      open(mkdtempSync(join(tmpdir(), 'gh-start-empty-')), true),
      (err: unknown) =>
        err instanceof StoreUnavailableError &&
        /no local copy/.test(err.message) &&
        !err.message.includes('postgres@'),
    )
    // CLI commands never start from the copy.
    await assert.rejects(open(dataDir, false), StoreUnavailableError)
    proxy.restore()
  })
  test('a local copy older than store.local_copy_max_age (default 7d) is refused, saying its age and the limit', async () => {
    const DAY_MS = 86_400_000
    const t0 = Date.now()
    const clock = createFrozenClock(t0)
    const dataDir = mkdtempSync(join(tmpdir(), 'gh-start-age-'))
    const first = await open(dataDir, true, clock)
    const kept = await first.tokens.issue({ subject: 'kept' })
    await first.keyRing.reload()
    await first.close()

    proxy.cut()
    try {
      // Eight days later: too old for the default limit.
      clock.set(t0 + 8 * DAY_MS)
      await assert.rejects(
        // Closed if it opens after all, so a failure here does not leave the test hanging.
        open(dataDir, true, clock).then(async (s) => {
          await s.close()
          return s
        }),
        (err: unknown) =>
          err instanceof StoreUnavailableError &&
          err.message.includes('shared-store-copy.json') &&
          err.message.includes('8.0 days old') &&
          err.message.includes('store.local_copy_max_age (7d)') &&
          !err.message.includes('postgres@'),
      )
      // Within a wider limit it is used.
      const wider = await open(dataDir, true, clock, { local_copy_max_age: '30d' })
      assert.equal(wider.storeConnected(), false)
      assert.equal((await wider.tokens.verify(kept.token)).ok, true)
      await wider.close()
      // Six days later: within the default.
      clock.set(t0 + 6 * DAY_MS)
      const recent = await open(dataDir, true, clock)
      assert.equal(recent.storeConnected(), false)
      assert.equal((await recent.tokens.verify(kept.token)).ok, true)
      await recent.close()
    } finally {
      proxy.restore()
    }
  })
})
