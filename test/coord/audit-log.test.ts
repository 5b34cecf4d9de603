import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createAuditLog } from '../../src/coord/audit-log.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import type { Logger } from '../../src/core/ports.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'

const T0 = Date.UTC(2026, 0, 1)
const DAY = 86_400

function recordingLogger() {
  const lines: Array<{ obj: object; msg?: string | undefined }> = []
  const push = (obj: object, msg?: string) => lines.push({ obj, msg })
  const log: Logger = { debug: push, info: push, warn: push, error: push }
  return { log, lines }
}

test('security events in log lines go to the store, with ids kept and everything else left out', async () => {
  const clock = createFrozenClock(T0)
  const store = createMemoryStore({ clock })
  const { log, lines } = recordingLogger()
  const audit = createAuditLog({ store, log, clock, flushMs: 60_000 })
  try {
    audit.logger.info({ event: 'sign_in', sid: 's-1', sub: 'alice', accessToken: 'SECRET-AT' }, 'signed in')
    audit.logger.info({ event: 'refresh', sid: 's-1' }, 'not a security event')
    audit.logger.warn({ event: 'token_revoked', jti: 'j-1', cascade: 2 }, 'revoked')
    assert.equal(lines.length, 3, 'every line still reaches the log')
    assert.equal(audit.pending(), 2)
    await audit.flush()
    const events = await store.listAudit({ since: 0 })
    assert.deepEqual(
      events.map((e) => [e.type, e.subject]),
      [
        ['sign_in', 'alice'],
        ['token_revoked', 'j-1'],
      ],
    )
    assert.ok(!JSON.stringify(events).includes('SECRET-AT'), 'no token in the audit log')
  } finally {
    await audit.close()
  }
})

test('retention: events older than it are pruned, newer ones stay', async () => {
  const clock = createFrozenClock(T0)
  const store = createMemoryStore({ clock })
  const { log, lines } = recordingLogger()
  const audit = createAuditLog({ store, log, clock, flushMs: 60_000 })
  try {
    audit.logger.info({ event: 'sign_in', sub: 'old' }, 'signed in')
    await audit.flush()
    clock.advance(60 * DAY * 1000)
    audit.logger.info({ event: 'sign_in', sub: 'recent' }, 'signed in')
    await audit.flush()
    clock.advance(40 * DAY * 1000)
    assert.equal(await audit.prune(90 * DAY), 1)
    assert.deepEqual(
      (await store.listAudit({ since: 0 })).map((e) => e.subject),
      ['recent'],
    )
    assert.ok(lines.some((l) => (l.obj as { event?: string }).event === 'audit_pruned'))
    assert.equal(await audit.prune(90 * DAY), 0)
  } finally {
    await audit.close()
  }
})
