import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import pg from 'pg'

/**
 * Where the tests find PostgreSQL and Redis: `GATEHOUSE_TEST_POSTGRES` and `GATEHOUSE_TEST_REDIS`,
 * default the local services. When one is unreachable the tests that need it skip, saying why on
 * stderr; under `CI=true` they fail instead, so a CI run never passes without them.
 */
export const POSTGRES_URL =
  process.env['GATEHOUSE_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_URL = process.env['GATEHOUSE_TEST_REDIS'] ?? 'redis://127.0.0.1:6379'

const inCI = process.env['CI'] === 'true'

/** undefined when PostgreSQL answers; else the reason to skip (or, under CI, throws). */
export async function postgresUnavailable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    return undefined
  } catch (error) {
    return unavailable('PostgreSQL', POSTGRES_URL, error)
  } finally {
    await client.end().catch(() => {})
  }
}

/** undefined when Redis answers PING; else the reason to skip (or, under CI, throws). */
export async function redisUnavailable(): Promise<string | undefined> {
  const client = new Redis(REDIS_URL, {
    lazyConnect: true,
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return undefined
  } catch (error) {
    return unavailable('Redis', REDIS_URL, error)
  } finally {
    client.disconnect()
  }
}

function unavailable(what: string, url: string, error: unknown): string {
  const reason = `${what} at ${redact(url)} is unreachable (${(error as Error).message}); set ${
    what === 'Redis' ? 'GATEHOUSE_TEST_REDIS' : 'GATEHOUSE_TEST_POSTGRES'
  } or start it`
  if (inCI) throw new Error(`CI=true and ${reason}`)
  process.stderr.write(`\n*** SKIPPING ${what} tests: ${reason} ***\n\n`)
  return reason
}

function redact(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.href
  } catch {
    return '(unparseable URL)'
  }
}

/** A schema or key-prefix name no other test run uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`
}

/** Drops a test schema and everything in it. */
export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL })
  await client.connect()
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  } finally {
    await client.end()
  }
}

/** Deletes every Redis key under a test prefix. */
export async function deleteRedisPrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 })
  try {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      if (keys.length > 0) await client.del(...keys)
    } while (cursor !== '0')
  } finally {
    client.disconnect()
  }
}
