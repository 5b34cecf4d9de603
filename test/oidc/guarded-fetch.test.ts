import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createFrozenClock } from '../../src/core/clock.ts'
import { ProviderUnavailableError } from '../../src/core/errors.ts'
import { createGuardedFetch } from '../../src/oidc/guarded-fetch.ts'

function scripted() {
  const calls: string[] = []
  let answer: () => Promise<Response> = async () => new Response('ok')
  const inner = (async (input: Parameters<typeof fetch>[0]) => {
    calls.push(String(input))
    return answer()
  }) as typeof fetch
  return { inner, calls, set: (a: () => Promise<Response>) => (answer = a) }
}

test('the breaker opens after repeated failures, refuses without calling, then lets one trial through', async () => {
  const clock = createFrozenClock()
  const s = scripted()
  const g = createGuardedFetch(s.inner, { clock, maxInFlight: 10, failureThreshold: 3, openSeconds: 30 })
  s.set(async () => new Response('busy', { status: 503 }))
  for (let i = 0; i < 3; i++) assert.equal((await g.fetch('https://idp/token')).status, 503)
  assert.equal(g.status().state, 'open')
  await assert.rejects(g.fetch('https://idp/token'), ProviderUnavailableError)
  assert.equal(s.calls.length, 3, 'refused without reaching the provider')
  assert.equal(g.status().retryInSeconds, 30)
  clock.advance(30_000)
  // Trial fails: open again at once.
  s.set(async () => {
    throw new TypeError('fetch failed')
  })
  await assert.rejects(g.fetch('https://idp/token'), TypeError)
  assert.equal(g.status().state, 'open')
  clock.advance(30_000)
  s.set(async () => new Response('ok'))
  assert.equal((await g.fetch('https://idp/token')).status, 200)
  assert.deepEqual(
    { state: g.status().state, failures: g.status().consecutiveFailures },
    { state: 'closed', failures: 0 },
  )
  assert.equal(g.status().shortCircuited, 1)
})

test('4xx answers are the provider working, not failing', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 10,
    failureThreshold: 2,
    openSeconds: 30,
  })
  s.set(async () => new Response('{"error":"invalid_grant"}', { status: 400 }))
  for (let i = 0; i < 5; i++) await g.fetch('https://idp/token')
  assert.equal(g.status().state, 'closed')
})

test('the bulkhead refuses calls beyond maxInFlight instead of queueing them', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 2,
    failureThreshold: 5,
    openSeconds: 30,
  })
  const release: Array<() => void> = []
  s.set(() => new Promise((ok) => release.push(() => ok(new Response('late')))))
  const a = g.fetch('https://idp/a')
  const b = g.fetch('https://idp/b')
  await assert.rejects(g.fetch('https://idp/c'), /2 calls already in flight/)
  assert.equal(s.calls.length, 2)
  for (const r of release) r()
  assert.equal((await a).status, 200)
  assert.equal((await b).status, 200)
  assert.equal(g.status().inFlight, 0)
})

test('half-open lets exactly one trial through at a time', async () => {
  const clock = createFrozenClock()
  const s = scripted()
  const g = createGuardedFetch(s.inner, { clock, maxInFlight: 10, failureThreshold: 1, openSeconds: 10 })
  s.set(async () => new Response('x', { status: 500 }))
  await g.fetch('https://idp/x')
  clock.advance(10_000)
  let release: (() => void) | undefined
  s.set(() => new Promise((ok) => (release = () => ok(new Response('ok')))))
  const trial = g.fetch('https://idp/trial')
  await assert.rejects(g.fetch('https://idp/second'), /trial call is in flight/)
  release!()
  assert.equal((await trial).status, 200)
  assert.equal(g.status().state, 'closed')
})
