import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createOffenders } from '../../src/admin/offenders.ts'

test('top offenders: counted per client, user agent and reason, bounded, most refused first', () => {
  const offenders = createOffenders(() => Date.UTC(2026, 10, 24), 3)
  for (let i = 0; i < 5; i++) offenders.record('rate_limited', '10.0.0.1', 'OldDesktop/1.2.3')
  offenders.record('rate_limited', '10.0.0.2', 'Browser/9')
  offenders.record('sign_in_loop', '10.0.0.3', undefined)
  offenders.record('rate_limited', '10.0.0.4', 'x'.repeat(500))
  const top = offenders.top()
  assert.equal(top.length, 3, 'bounded')
  assert.deepEqual(top[0], {
    clientAddress: '10.0.0.1',
    userAgent: 'OldDesktop/1.2.3',
    code: 'rate_limited',
    count: 5,
    lastSeen: '2026-11-24T00:00:00.000Z',
  })
  assert.ok(top.every((o) => o.userAgent.length <= 200))
})
