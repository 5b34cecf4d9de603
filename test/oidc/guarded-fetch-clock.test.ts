// A clock that steps back (NTP, or a drill moving its frozen clock) must not hold the breaker open, or
// a failed refresh's retry back, for as long as it stepped: the provider would stay refused after it returned.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createFrozenClock } from '../../src/core/clock.ts'
import { ProviderUnavailableError } from '../../src/core/errors.ts'
import { createGuardedFetch } from '../../src/oidc/guarded-fetch.ts'

test('a clock stepping back past the opening lets one trial call through', async () => {
  const clock = createFrozenClock()
  let status = 503
  let calls = 0
  const inner = (async () => {
    calls++
    return new Response('', { status })
  }) as typeof fetch
  const g = createGuardedFetch(inner, { clock, maxInFlight: 4, failureThreshold: 2, openSeconds: 30 })
  await g.fetch('https://idp/jwks')
  await g.fetch('https://idp/jwks')
  assert.equal(g.status().state, 'open')
  await assert.rejects(g.fetch('https://idp/jwks'), ProviderUnavailableError)
  assert.equal(calls, 2)
  clock.advance(-3_600_000)
  status = 200
  assert.equal((await g.fetch('https://idp/jwks')).status, 200)
  assert.equal(calls, 3)
  assert.equal(g.status().state, 'closed')
})
