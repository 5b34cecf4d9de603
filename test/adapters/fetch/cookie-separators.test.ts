/**
 * The fetch adapter reads the Cookie header through `Headers.get`, which joins repeated fields (with
 * `, ` by the Fetch standard; Node's undici uses `; ` for Cookie), and a client can write `, ` itself
 * (Gatehouse 8, item 7): the session cookie is read, and never forwarded, either way.
 */
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createFetchHandler } from '../../../src/adapters/fetch/handler.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/validate.ts'
import { type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { sessionCookie } from '../../helpers/session.ts'

const SECRET = 'fetch-cookie-separators-secret-0123456789ab'
let upstream: RecordingUpstream
let handle: (request: Request) => Promise<Response>

before(async () => {
  upstream = await startRecordingUpstream()
  const config = validateConfig({
    public_url: 'http://localhost:8787',
    upstream: upstream.url,
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'C' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: DEV_LIFETIMES,
  })
  handle = await createFetchHandler(config, { env: { C: 'unused', S: SECRET } })
})
after(() => upstream.close())

test('two Cookie fields, and a ", " inside one: signed in, and no Gatehouse cookie upstream', async () => {
  const session = await sessionCookie(SECRET, {
    identity: { sub: 'u1', user: 'u1', groups: [] },
  })
  const twoFields = new Headers()
  twoFields.append('cookie', 'theme=dark')
  twoFields.append('cookie', session)
  for (const headers of [twoFields, new Headers({ cookie: `${session}, lang=en` })]) {
    const response = await handle(new Request('http://localhost:8787/page', { headers }))
    assert.equal(response.status, 200, 'the session was read')
    const forwarded = String(upstream.requests.at(-1)!.headers.cookie)
    assert.ok(!forwarded.includes('gatehouse'), `forwarded: ${forwarded.slice(0, 40)}`)
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-user'], 'u1')
  }
  assert.deepEqual(
    upstream.requests.map((r) => r.headers.cookie),
    ['theme=dark', 'lang=en'],
  )
})
