import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'

import { SchemaTooNewError, StoreUnavailableError } from '../../src/store/errors.ts'
import { openPostgresStore, POSTGRES_SCHEMA_VERSION } from '../../src/store/postgres-store.ts'
import { dropSchema, POSTGRES_URL, postgresUnavailable, uniqueName } from '../helpers/shared-services.ts'
import {
  alertContract,
  auditContract,
  cacheContract,
  key,
  sessionRevocationContract,
  storeContract,
  token,
} from './store-contract.ts'

const skip = await postgresUnavailable()
const schemas: string[] = []

function freshSchema(): string {
  const schema = uniqueName('gh_test')
  schemas.push(schema)
  return schema
}

after(async () => {
  if (skip === undefined) for (const schema of schemas) await dropSchema(schema)
})

if (skip !== undefined) {
  it('PostgreSQL store', { skip }, () => {})
} else {
  const openPostgres = async () => {
    const store = await openPostgresStore({ connection: POSTGRES_URL, schema: freshSchema() })
    return { store, close: () => store.close() }
  }
  storeContract('PostgreSQL store', openPostgres)
  cacheContract('PostgreSQL store', openPostgres)
  alertContract('PostgreSQL store', openPostgres)
  auditContract('PostgreSQL store', openPostgres)
  sessionRevocationContract('PostgreSQL store', async () => {
    const schema = freshSchema()
    const store = await openPostgresStore({ connection: POSTGRES_URL, schema })
    return {
      store,
      close: () => store.close(),
      // The database's clock cannot be moved: what was stored so far is dated back instead.
      later: async (seconds: number) => {
        const client = new pg.Client({ connectionString: POSTGRES_URL })
        await client.connect()
        try {
          await client.query(`UPDATE "${schema}".gh_session_revocations SET stored_at = stored_at - $1`, [
            seconds,
          ])
        } finally {
          await client.end()
        }
      },
    }
  })

  describe('PostgreSQL store on its own', () => {
    const T = 1_767_225_600

    async function schemaRows(schema: string): Promise<string[]> {
      const client = new pg.Client({ connectionString: POSTGRES_URL })
      await client.connect()
      try {
        const { rows } = await client.query(
          `SELECT component, version FROM "${schema}".gatehouse_schema ORDER BY component, version`,
        )
        return rows.map((row) => `${row.component} ${row.version}`)
      } finally {
        await client.end()
      }
    }

    async function tables(schema: string): Promise<string[]> {
      const client = new pg.Client({ connectionString: POSTGRES_URL })
      await client.connect()
      try {
        const { rows } = await client.query(
          `SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'i') ORDER BY c.relname`,
          [schema],
        )
        return rows.map((row) => `${row.relkind === 'r' ? 'table' : 'index'} ${row.relname}`)
      } finally {
        await client.end()
      }
    }

    const everyVersion = Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => `store ${i + 1}`)

    it('creates its schema, tables and indexes, and records each migration once', async () => {
      const schema = freshSchema()
      const store = await openPostgresStore({ connection: POSTGRES_URL, schema })
      await store.close()
      const objects = await tables(schema)
      for (const name of [
        'table gatehouse_schema',
        'table gh_cache',
        'table gh_keys',
        'table gh_tokens',
        'index gh_tokens_parent_jti',
        'index gh_tokens_revoked_at',
      ]) {
        assert.ok(objects.includes(name), `${name} in ${objects.join(', ')}`)
      }
      assert.deepEqual(await schemaRows(schema), everyVersion)
    })

    it('migrates once when many instances start at the same moment (advisory lock)', async () => {
      const schema = freshSchema()
      const stores = await Promise.all(
        Array.from({ length: 6 }, () => openPostgresStore({ connection: POSTGRES_URL, schema })),
      )
      assert.deepEqual(await schemaRows(schema), everyVersion)
      await stores[0]!.insertKey(key('k-1'))
      for (const store of stores) assert.deepEqual(await store.listKeys(), [key('k-1')])
      await Promise.all(stores.map((store) => store.close()))
    })

    it('keeps keys and tokens across closing and reopening', async () => {
      const schema = freshSchema()
      const store = await openPostgresStore({ connection: POSTGRES_URL, schema })
      await store.insertKey(key('k-1', { state: 'current' }))
      await store.insertToken(token('t-1', { description: 'kept' }))
      await store.insertToken(token('t-2', { parentJti: 't-1' }))
      await store.revokeTokens(['t-2'], T + 5)
      await store.close()

      const again = await openPostgresStore({ connection: POSTGRES_URL, schema })
      assert.deepEqual(await again.listKeys(), [key('k-1', { state: 'current' })])
      assert.deepEqual(await again.getToken('t-1'), token('t-1', { description: 'kept' }))
      assert.deepEqual(await again.listRevoked(T), [{ jti: 't-2', expiresAt: T + 86_400 }])
      await again.close()
    })

    it('refuses a schema migrated by a newer Gatehouse, changing nothing', async () => {
      const schema = freshSchema()
      const client = new pg.Client({ connectionString: POSTGRES_URL })
      await client.connect()
      await client.query(`CREATE SCHEMA "${schema}"`)
      await client.query(`CREATE TABLE "${schema}".gatehouse_schema (component TEXT NOT NULL,
        version INTEGER NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (component, version));
        INSERT INTO "${schema}".gatehouse_schema VALUES ('store', 1, 0), ('store', 99, 0)`)
      await client.end()
      await assert.rejects(
        openPostgresStore({ connection: POSTGRES_URL, schema }),
        (error: unknown) => error instanceof SchemaTooNewError && error.code === 'ERR_STORE_SCHEMA_TOO_NEW',
      )
      assert.deepEqual(await tables(schema), ['table gatehouse_schema', 'index gatehouse_schema_pkey'])
    })

    it('compare-and-set holds between two instances', async () => {
      const schema = freshSchema()
      const a = await openPostgresStore({ connection: POSTGRES_URL, schema })
      const b = await openPostgresStore({ connection: POSTGRES_URL, schema })
      await a.insertKey(key('k-1', { state: 'next' }))
      const results = await Promise.all([
        a.transitionKey('k-1', 'next', 'current'),
        b.transitionKey('k-1', 'next', 'current'),
      ])
      assert.deepEqual(results.sort(), [false, true])
      assert.equal((await b.listKeys())[0]?.state, 'current')
      await a.close()
      await b.close()
    })

    it('revokes all or nothing: a failure part-way leaves every token as it was', async () => {
      const schema = freshSchema()
      const store = await openPostgresStore({ connection: POSTGRES_URL, schema })
      await store.insertToken(token('a'))
      await store.insertToken(token('boom'))
      await store.pool.query(`CREATE FUNCTION "${schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.jti = 'boom' THEN RAISE EXCEPTION 'refused by test trigger'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER test_refuse BEFORE UPDATE ON "${schema}".gh_tokens
        FOR EACH ROW EXECUTE FUNCTION "${schema}".refuse()`)
      await assert.rejects(store.revokeTokens(['a', 'boom'], T + 1), /refused by test trigger/)
      assert.equal((await store.getToken('a'))?.revokedAt, undefined)
      assert.deepEqual(await store.listRevoked(T), [])
      await store.pool.query(`DROP TRIGGER test_refuse ON "${schema}".gh_tokens`)
      assert.equal(await store.revokeTokens(['a', 'boom'], T + 2), 2)
      await store.close()
    })

    it('says ERR_STORE_UNAVAILABLE when the database cannot be reached', async () => {
      await assert.rejects(
        openPostgresStore({
          connection: 'postgres://postgres@127.0.0.1:9/test',
          schema: freshSchema(),
          connectTimeoutMs: 500,
        }),
        (error: unknown) => error instanceof StoreUnavailableError && error.code === 'ERR_STORE_UNAVAILABLE',
      )
    })

    it('refuses a schema name that would need quoting, at construction', async () => {
      await assert.rejects(openPostgresStore({ connection: POSTGRES_URL, schema: 'Bad"; DROP' }), {
        name: 'TypeError',
      })
    })
  })
}
