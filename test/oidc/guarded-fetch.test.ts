import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createFrozenClock } from '../../src/core/clock.ts'
import { ProviderBusyError, ProviderUnavailableError } from '../../src/core/errors.ts'
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

test('calls beyond maxInFlight wait in a bounded queue, oldest first; a full queue refuses at once', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 2,
    maxQueued: 1,
    queueTimeoutMs: 60_000,
    failureThreshold: 5,
    openSeconds: 30,
  })
  const release: Array<() => void> = []
  s.set(() => new Promise((ok) => release.push(() => ok(new Response('late')))))
  const a = g.fetch('https://idp/a')
  const b = g.fetch('https://idp/b')
  const c = g.fetch('https://idp/c') // waits
  await assert.rejects(g.fetch('https://idp/d'), (err: unknown) => {
    assert.ok(err instanceof ProviderBusyError)
    assert.equal(err.code, 'ERR_PROVIDER_BUSY')
    assert.equal(err.retryAfterSeconds, 60)
    assert.match(err.message, /2 in flight and 1 waiting/)
    return true
  })
  await Promise.resolve()
  assert.deepEqual(s.calls, ['https://idp/a', 'https://idp/b'], 'c waits, d never reaches the provider')
  assert.deepEqual({ inFlight: g.status().inFlight, queued: g.status().queued }, { inFlight: 2, queued: 1 })
  release.shift()!()
  assert.equal((await a).status, 200)
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(s.calls, ['https://idp/a', 'https://idp/b', 'https://idp/c'], 'a freed slot goes to c')
  for (const r of release.splice(0)) r()
  assert.equal((await b).status, 200)
  assert.equal((await c).status, 200)
  assert.deepEqual({ inFlight: g.status().inFlight, queued: g.status().queued }, { inFlight: 0, queued: 0 })
  assert.equal(g.status().shortCircuited, 1)
})

test('a queued call that waits past its deadline fails busy and never reaches the provider', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 1,
    maxQueued: 10,
    queueTimeoutMs: 20,
    failureThreshold: 5,
    openSeconds: 30,
  })
  let release: (() => void) | undefined
  s.set(() => new Promise((ok) => (release = () => ok(new Response('slow')))))
  const a = g.fetch('https://idp/a')
  await assert.rejects(g.fetch('https://idp/b'), ProviderBusyError)
  assert.equal(g.status().queued, 0, 'the timed-out call left the queue')
  release!()
  assert.equal((await a).status, 200)
  assert.deepEqual(s.calls, ['https://idp/a'])
  assert.equal(g.status().inFlight, 0)
  // Busy is not the provider failing: the breaker stays closed.
  assert.equal(g.status().state, 'closed')
})

test('a call queued while the breaker opens is refused when its turn comes', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 1,
    queueTimeoutMs: 60_000,
    failureThreshold: 1,
    openSeconds: 30,
  })
  let release: (() => void) | undefined
  s.set(() => new Promise((ok) => (release = () => ok(new Response('down', { status: 502 })))))
  const a = g.fetch('https://idp/a')
  const b = g.fetch('https://idp/b')
  await new Promise((r) => setImmediate(r))
  release!()
  assert.equal((await a).status, 502)
  await assert.rejects(b, /circuit open/)
  assert.deepEqual(s.calls, ['https://idp/a'])
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

test('a caller that gives up while queued leaves the line, and that never opens the breaker', async () => {
  const s = scripted()
  const g = createGuardedFetch(s.inner, {
    clock: createFrozenClock(),
    maxInFlight: 1,
    maxQueued: 10,
    queueTimeoutMs: 60_000,
    failureThreshold: 2,
    openSeconds: 30,
  })
  let release: (() => void) | undefined
  s.set(() => new Promise((ok) => (release = () => ok(new Response('slow but fine')))))
  const first = g.fetch('https://idp/a')
  const waiting = Array.from({ length: 5 }, () => {
    const controller = new AbortController()
    return { controller, call: g.fetch('https://idp/b', { signal: controller.signal }) }
  })
  await new Promise((r) => setImmediate(r))
  assert.equal(g.status().queued, 5)
  for (const w of waiting) w.controller.abort(new DOMException('caller timed out', 'TimeoutError'))
  for (const w of waiting) await assert.rejects(w.call, { name: 'TimeoutError' })
  assert.equal(g.status().queued, 0, 'they left the line')
  release!()
  assert.equal((await first).status, 200)
  assert.deepEqual(s.calls, ['https://idp/a'], 'none of them reached the provider')
  assert.deepEqual(
    { state: g.status().state, failures: g.status().consecutiveFailures },
    { state: 'closed', failures: 0 },
  )
  // An already-aborted signal never queues.
  await assert.rejects(g.fetch('https://idp/c', { signal: AbortSignal.abort() }), { name: 'AbortError' })
  assert.equal(g.status().inFlight, 0)
})

test('a call aborted by its caller soon after its slot came (its deadline spent in line) is not the provider failing; a provider too slow for the whole deadline is', async () => {
  const calls: string[] = []
  let delayMs = 40
  const inner = (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    calls.push(String(input))
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(() => resolve(new Response('ok')), delayMs)
      init?.signal?.addEventListener('abort', () => {
        clearTimeout(timer)
        reject(init.signal!.reason)
      })
    })
  }) as typeof fetch
  const g = createGuardedFetch(inner, {
    clock: createFrozenClock(),
    maxInFlight: 1,
    queueTimeoutMs: 10_000,
    failureThreshold: 2,
    openSeconds: 30,
    callTimeoutMs: 60,
  })
  // Four callers, each with the usual 60 ms deadline started before waiting in line.
  const results = await Promise.allSettled(
    [1, 2, 3, 4].map((i) => g.fetch(`https://idp/${i}`, { signal: AbortSignal.timeout(60) })),
  )
  assert.equal(results[0]!.status, 'fulfilled')
  assert.ok(
    results.slice(1).every((r) => r.status === 'rejected'),
    'the others ran out of time',
  )
  assert.deepEqual(
    { state: g.status().state, failures: g.status().consecutiveFailures },
    { state: 'closed', failures: 0 },
    'time spent in our own queue is not held against the provider',
  )
  // A provider that does not answer within the whole deadline is failing.
  delayMs = 10_000
  for (let i = 0; i < 2; i++) {
    await assert.rejects(g.fetch('https://idp/slow', { signal: AbortSignal.timeout(60) }), {
      name: 'TimeoutError',
    })
  }
  assert.equal(g.status().state, 'open')
  assert.ok(calls.length >= 3)
})
