import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import {
  createReconnectingStore,
  localCopyAge,
  readLocalCopy,
  withLocalCopy,
} from '../../src/coord/local-copy.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { StoreUnavailableError } from '../../src/store/errors.ts'
import { createMemoryStore } from '../../src/store/memory-store.ts'

const T0 = Date.UTC(2026, 0, 1)
const MINUTE = 60_000

test('the local copy is saved again hourly even unchanged, so its savedAt says how current it is', async () => {
  const clock = createFrozenClock(T0)
  const file = join(mkdtempSync(join(tmpdir(), 'gh-copy-')), 'shared-store-copy.json')
  const store = withLocalCopy(createMemoryStore({ clock }), file, silentLogger, clock)
  await store.listRevoked(0)
  assert.equal(readLocalCopy(file)?.savedAt, T0 / 1000)
  clock.advance(30 * MINUTE)
  await store.listRevoked(0)
  assert.equal(readLocalCopy(file)?.savedAt, T0 / 1000, 'unchanged within the hour: not rewritten')
  clock.advance(31 * MINUTE)
  await store.listRevoked(0)
  assert.equal(readLocalCopy(file)?.savedAt, T0 / 1000 + 61 * 60, 'rewritten after an hour')
  assert.equal(localCopyAge(readLocalCopy(file)!, clock), 0)
  clock.advance(8 * 24 * 60 * MINUTE)
  assert.equal(localCopyAge(readLocalCopy(file)!, clock), 8 * 86_400)
})

test('a copy that does not say when it was saved has no age (refused at start)', () => {
  const clock = createFrozenClock(T0)
  assert.equal(localCopyAge({ savedAt: 0 }, clock), undefined)
  assert.equal(localCopyAge({ savedAt: '1767225600' }, clock), undefined)
  assert.equal(localCopyAge({}, clock), undefined)
  assert.equal(localCopyAge({ savedAt: T0 / 1000 + 3600 }, clock), 0, 'from the future: just saved')
})

test('session revocations are in the local copy: an instance starting without PostgreSQL still refuses them', async () => {
  const clock = createFrozenClock(T0)
  const t = T0 / 1000
  const file = join(mkdtempSync(join(tmpdir(), 'gh-copy-')), 'shared-store-copy.json')
  const primary = createMemoryStore({ clock })
  await primary.revokeSessions([
    { kind: 'sid', value: 's-1', revokedAt: t, expiresAt: t + 600 },
    { kind: 'sub', value: 'alice', revokedAt: t, expiresAt: t + 60 },
  ])
  await withLocalCopy(primary, file, silentLogger, clock).listSessionRevocations(t)
  const copy = readLocalCopy(file)!
  const offline = createReconnectingStore({
    open: () => Promise.reject(new StoreUnavailableError('PostgreSQL', 'down')),
    copy,
    log: silentLogger,
  })
  assert.deepEqual(
    (await offline.listSessionRevocations(t + 60)).map((r) => r.value),
    ['s-1'],
  )
  assert.equal((await offline.getSessionRevocation('sub', 'alice'))?.expiresAt, t + 60)
  await assert.rejects(
    offline.revokeSessions([{ kind: 'sid', value: 's-2', revokedAt: t, expiresAt: t + 1 }]),
    StoreUnavailableError,
  )
})
