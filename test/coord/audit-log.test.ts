import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createAuditLog } from '../../src/coord/audit-log.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import type { Logger } from '../../src/core/ports.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'
import type { AuditStore } from '../../src/store/ports.ts'
import { openPostgresStore, type PostgresStore } from '../../src/store/postgres-store.ts'
import { dropSchema, POSTGRES_URL, postgresUnavailable, uniqueName } from '../helpers/shared-services.ts'
import { startTCPProxy, type TCPProxy } from '../helpers/tcp-proxy.ts'

const pgSkip = await postgresUnavailable()

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

describe('audit log on PostgreSQL: an event the store refuses never blocks the others', {
  skip: pgSkip,
}, () => {
  const schema = uniqueName('gh_audit')
  let proxy: TCPProxy
  let store: PostgresStore

  before(async () => {
    const u = new URL(POSTGRES_URL)
    proxy = await startTCPProxy({ host: u.hostname, port: Number(u.port || 5432) })
    u.port = String(proxy.port)
    store = await openPostgresStore({ connection: u.href, schema, connectTimeoutMs: 1000 })
  })

  after(async () => {
    await store?.close()
    await proxy?.close()
    await dropSchema(schema)
  })

  const subjects = async () => (await store.listAudit({ since: 0, limit: 10_000 })).map((e) => e.subject)
  const events = (lines: ReturnType<typeof recordingLogger>['lines'], event: string) =>
    lines.filter((l) => (l.obj as { event?: string }).event === event)

  test('NUL and other control characters are stripped at record: the event is stored, later ones too', async () => {
    const clock = createFrozenClock(T0)
    const { log } = recordingLogger()
    const audit = createAuditLog({ store, log, clock, flushMs: 60_000 })
    try {
      audit.logger.info(
        { event: 'sign_in', sub: 'nul\u0000-user\r\n\u001b[31m', sid: 's\u0000' },
        'signed in',
      )
      await audit.flush()
      audit.logger.info({ event: 'sign_in', sub: 'after-nul' }, 'signed in')
      await audit.flush()
      assert.equal(audit.pending(), 0)
      const stored = await store.listAudit({ since: 0, limit: 10_000 })
      const nul = stored.find((e) => e.subject === 'nul-user[31m')
      assert.ok(nul, `stored without its control characters: ${JSON.stringify(stored.map((e) => e.subject))}`)
      assert.equal(nul.detail['sid'], 's')
      assert.ok(stored.some((e) => e.subject === 'after-nul'))
    } finally {
      await audit.close()
    }
  })

  test('a batch the store refuses is written event by event: the bad one is dropped (type only logged)', async () => {
    const clock = createFrozenClock(T0)
    const { log, lines } = recordingLogger()
    // Puts a NUL back past record(), as any other event the store cannot take would arrive.
    const poisoning: AuditStore = {
      ...store,
      appendAudit: (batch) =>
        store.appendAudit(
          batch.map((e) => (e.subject === 'poison' ? { ...e, subject: 'poison\u0000secret-part' } : e)),
        ),
      listAudit: (o) => store.listAudit(o),
      pruneAudit: (b) => store.pruneAudit(b),
    }
    const audit = createAuditLog({ store: poisoning, log, clock, flushMs: 60_000 })
    try {
      audit.logger.info({ event: 'sign_in', sub: 'batch-before' }, 'signed in')
      audit.logger.info({ event: 'sign_out', sub: 'poison' }, 'signed out')
      audit.logger.info({ event: 'sign_in', sub: 'batch-after' }, 'signed in')
      await audit.flush()
      assert.equal(audit.pending(), 0, 'nothing left blocking the queue')
      const got = await subjects()
      assert.ok(got.includes('batch-before') && got.includes('batch-after'), JSON.stringify(got))
      assert.ok(!got.some((s) => s?.startsWith('poison')))
      const dropped = events(lines, 'audit_event_dropped')
      assert.equal(dropped.length, 1)
      assert.equal((dropped[0]!.obj as { type?: string }).type, 'sign_out')
      assert.ok(!JSON.stringify(dropped).includes('secret-part'), 'the refused content is not logged')
      assert.equal(events(lines, 'audit_write_failed').length, 0, 'not taken for the store being down')
      // And the log goes on.
      audit.logger.info({ event: 'sign_in', sub: 'next-batch' }, 'signed in')
      await audit.flush()
      assert.ok((await subjects()).includes('next-batch'))
    } finally {
      await audit.close()
    }
  })

  test('PostgreSQL unreachable: the batch is kept and written when it is back', async () => {
    const clock = createFrozenClock(T0)
    const { log, lines } = recordingLogger()
    const audit = createAuditLog({ store, log, clock, flushMs: 60_000 })
    try {
      proxy.cut()
      audit.logger.info({ event: 'sign_in', sub: 'outage-1' }, 'signed in')
      audit.logger.info({ event: 'sign_in', sub: 'outage-2' }, 'signed in')
      await audit.flush()
      assert.equal(audit.pending(), 2, 'kept while the store is unreachable')
      assert.equal(events(lines, 'audit_event_dropped').length, 0, 'nothing dropped for an outage')
      assert.ok(events(lines, 'audit_write_failed').length >= 1)
      proxy.restore()
      audit.logger.info({ event: 'sign_in', sub: 'outage-3' }, 'signed in')
      await audit.flush()
      assert.equal(audit.pending(), 0)
      const got = (await subjects()).filter((s) => s?.startsWith('outage-'))
      assert.deepEqual(got.sort(), ['outage-1', 'outage-2', 'outage-3'])
    } finally {
      proxy.restore()
      await audit.close()
    }
  })
})
