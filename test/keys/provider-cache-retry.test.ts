// Gatehouse 8, item 8: a copy whose refresh failed is retried on a backoff schedule (5 s, doubling, at
// most 5 min, with jitter) on the injected clock, not only once it is refresh_after old. A real
// oidc-provider behind a fault-injecting proxy.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createProviderCache } from '../../src/keys/provider-cache.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.ts'
import { freePort } from '../helpers/net.ts'
import { startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const DISCOVERY = '/_idp/.well-known/openid-configuration'
let idp: TestIdP
let proxy: FaultProxy

before(async () => {
  const proxyPort = await freePort()
  idp = await startTestIdP({
    redirectUris: ['http://127.0.0.1:1/oauth2/callback'],
    issuerOrigin: `http://127.0.0.1:${proxyPort}`,
  })
  proxy = await startFaultProxy(`http://127.0.0.1:${idp.port}`, { port: proxyPort })
})

after(async () => {
  await proxy?.close()
  await idp?.close()
})

test('a young copy whose refresh failed is retried at 5 s, 10 s, 20 s… up to 5 min, and recovers at once', async () => {
  proxy.clear()
  const clock = createFrozenClock(Math.floor(Date.now() / 1000) * 1000) // the schedule counts whole seconds
  const store = createMemoryStore()
  const options = { issuer: idp.issuer, clock, log: silentLogger, store, timeoutMs: 2000 }
  // A copy persisted a moment ago by an earlier process.
  await createProviderCache(options).refreshNow()

  proxy.set(DISCOVERY, { kind: 'status', status: 504 })
  const cache = createProviderCache({ ...options, random: () => 0.5 }) // jitter factor exactly 1
  await assert.rejects(cache.refreshNow(), /504/)
  assert.equal(cache.status().stale, true)
  assert.equal(cache.status().metadata.source, 'persisted')

  const expected = [5, 10, 20, 40, 80, 160, 300, 300]
  for (const delay of expected) {
    const due = cache.nextRetryAt()!
    assert.equal(due - clock.now(), delay * 1000, `retry ${delay} s after the last failure`)
    // Not before it is due: no request reaches the provider.
    const seen = proxy.count(DISCOVERY)
    clock.advance(delay * 1000 - 1000)
    await cache.refreshIfDue()
    assert.equal(proxy.count(DISCOVERY), seen, `no retry before ${delay} s`)
    clock.advance(1000)
    await cache.refreshIfDue()
    assert.equal(proxy.count(DISCOVERY), seen + 1, `one retry at ${delay} s`)
  }

  proxy.clear()
  clock.advance(300_000)
  await cache.refreshIfDue()
  const st = cache.status()
  assert.equal(st.stale, false)
  assert.equal(st.lastError, undefined)
  assert.equal(st.metadata.source, 'network')
  assert.equal(cache.nextRetryAt(), undefined)
})

test('revalidate asks the provider at once, whatever the schedule says', async () => {
  proxy.clear()
  const clock = createFrozenClock(Date.now())
  const options = {
    issuer: idp.issuer,
    clock,
    log: silentLogger,
    store: createMemoryStore(),
    timeoutMs: 2000,
  }
  proxy.set(DISCOVERY, { kind: 'status', status: 504 })
  const cache = createProviderCache(options)
  await assert.rejects(cache.refreshNow(), /504/)
  await assert.rejects(cache.revalidate(), /504/)
  assert.equal(cache.status().metadata.source, 'none')
  proxy.clear()
  // No clock movement: the next scheduled retry is seconds away, a sign-in does not wait for it.
  assert.ok(cache.nextRetryAt()! > clock.now())
  await cache.revalidate()
  const st = cache.status()
  assert.equal(st.stale, false)
  assert.equal(st.metadata.source, 'network')
  assert.equal(st.jwks.source, 'network')
})

test('a clock stepping back past the failure does not postpone the retry', async () => {
  const clock = createFrozenClock(Math.floor(Date.now() / 1000) * 1000)
  const options = {
    issuer: idp.issuer,
    clock,
    log: silentLogger,
    store: createMemoryStore(),
    timeoutMs: 2000,
  }
  await createProviderCache(options).refreshNow()
  proxy.set(DISCOVERY, { kind: 'status', status: 504 })
  const cache = createProviderCache(options)
  await assert.rejects(cache.refreshNow(), /504/)
  proxy.clear()
  clock.advance(-3_600_000)
  assert.equal(cache.nextRetryAt(), clock.now())
  await cache.refreshIfDue()
  assert.equal(cache.status().stale, false)
})
