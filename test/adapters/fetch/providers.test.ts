/**
 * The fetch handler with a providers list (docs/providers.md): the chooser, a sign-in at the second of two
 * real providers on its own callback, the provider sent upstream, and each provider's secret required.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createFetchHandler } from '../../../src/adapters/fetch/handler.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { ConfigError, validateConfig } from '../../../src/config/validate.ts'
import { browserFetch } from '../../helpers/browser-fetch.ts'
import { fetchHandlerBrowser } from '../../helpers/cookie-client.ts'
import { type RecordingUpstream, startRecordingUpstream } from '../../helpers/net.ts'
import { signIn, startTestIdP, type TestIdP } from '../../helpers/test-idp.ts'

const BASE = 'http://localhost:8787'
const HTML = { accept: 'text/html' }

describe('createFetchHandler with two providers', () => {
  let corp: TestIdP
  let contractors: TestIdP
  let upstream: RecordingUpstream
  let handle: (request: Request) => Promise<Response>
  let config: ReturnType<typeof validateConfig>

  /** A browser whose requests to BASE go to the handler (as an edge runtime would), the rest to the network. */
  const browser = () => fetchHandlerBrowser(BASE, (request) => handle(request), browserFetch)

  before(async () => {
    const idpFor = (name: string) =>
      startTestIdP({ redirectUris: [`${BASE}/oauth2/callback/${name}`], clientId: `gh-${name}` })
    ;[corp, contractors] = await Promise.all([idpFor('corp'), idpFor('contractors')])
    await contractors.users.add('carl', 'contractor password 1', { groups: ['contractors'] })
    upstream = await startRecordingUpstream()
    config = validateConfig({
      public_url: BASE,
      upstream: upstream.url,
      providers: [
        { name: 'corp', issuer: corp.issuer, client_id: corp.clientId, client_secret: { env: 'CORP' } },
        {
          name: 'contractors',
          title: 'Contractor account',
          issuer: contractors.issuer,
          client_id: contractors.clientId,
          client_secret: { env: 'CONTRACTORS' },
        },
      ],
      session: { secrets: [{ env: 'SESSION_SECRET' }] },
      lifetimes: DEV_LIFETIMES,
    })
    handle = await createFetchHandler(config, {
      env: {
        CORP: corp.clientSecret,
        CONTRACTORS: contractors.clientSecret,
        SESSION_SECRET: 'fetch-providers-session-secret-0123456789',
      },
    })
  })

  after(async () => {
    await upstream?.close()
    await Promise.all([corp?.close(), contractors?.close()])
  })

  test('the chooser, then a sign-in at the contractors provider on its own callback', async () => {
    const b = browser()
    const nav = await b.request(`${BASE}/page`, { headers: HTML })
    assert.equal(nav.status, 302)
    assert.equal(nav.headers.get('location'), '/oauth2/sign_in?rd=%2Fpage')
    const page = await b.request(`${BASE}/oauth2/sign_in?rd=%2Fpage`, { headers: HTML })
    assert.equal(page.status, 200)
    assert.match(await page.text(), /provider=contractors&amp;rd=%2Fpage">Contractor account</)
    const start = await b.request(`${BASE}/oauth2/sign_in?provider=contractors&rd=%2Fpage`, { headers: HTML })
    assert.equal(start.status, 302)
    const callback = await signIn(
      b,
      start.headers.get('location')!,
      'carl',
      'contractor password 1',
      contractors.issuer,
    )
    assert.equal(callback.pathname, '/oauth2/callback/contractors')
    const done = await b.follow(callback, { headers: HTML })
    assert.equal(done.response.status, 200)
    assert.equal(done.url, `${BASE}/page`)
    const seen = upstream.requests.at(-1)!
    assert.equal(seen.headers['x-auth-request-provider'], 'contractors')
    assert.equal(seen.headers['x-auth-request-preferred-username'], 'carl')
  })

  test("each provider's secret is required, and named when missing", async () => {
    await assert.rejects(
      createFetchHandler(config, {
        env: { CORP: 'x', SESSION_SECRET: 'fetch-providers-session-secret-0123456789' },
      }),
      (err: ConfigError) =>
        err instanceof ConfigError && err.problems.some((p) => p.path === 'providers[1].client_secret'),
    )
  })
})
