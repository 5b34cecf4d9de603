/**
 * OIDC Back-Channel Logout 1.0 against a real oidc-provider: the client registers the gateway's
 * backchannel_logout_uri, a browser signs in, the user signs out at the provider, the provider posts a
 * logout token to the gateway, and the gateway's cookie (even a copy of it) is refused from then on.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { browserFetch } from '../helpers/browser-fetch.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { formAction, hiddenInputs, signInAt, startTestIdP, type TestIdP } from '../helpers/test-idp.ts'

const SESSION_SECRET = 'provider-logout-session-secret-0123456789abcdef'

describe('back-channel logout from a real OpenID provider', () => {
  let idp: TestIdP
  let upstream: RecordingUpstream
  let gateway: Gateway
  let base: string
  const delivered: string[] = []

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    idp = await startTestIdP({
      redirectUris: [`${base}/oauth2/callback`],
      postLogoutRedirectUris: [`${base}/`],
      backchannelLogoutUri: `${base}/oauth2/backchannel_logout`,
    })
    idp.idp.provider.on('backchannel.success', () => delivered.push('ok'))
    idp.idp.provider.on('backchannel.error', (_ctx, err) =>
      delivered.push(`error: ${(err as Error).message} ${String((err as Error).cause)}`),
    )
    upstream = await startRecordingUpstream()
    const config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-bcl-')),
      listen: { host: '127.0.0.1', port },
      provider: { issuer: idp.issuer, client_id: idp.clientId, client_secret: { env: 'GH_CLIENT_SECRET' } },
      session: { secrets: [{ env: 'GH_SESSION_SECRET' }] },
      lifetimes: DEV_LIFETIMES,
      shutdown: { drain: '1s' },
    })
    gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      env: { GH_CLIENT_SECRET: idp.clientSecret, GH_SESSION_SECRET: SESSION_SECRET },
      probeTLS: false,
    })
  })

  after(async () => {
    await gateway?.close()
    await upstream?.close()
    await idp?.close()
  })

  test('signing out at the provider ends the gateway session: the cookie is refused afterwards', async () => {
    const { browser } = await signInAt(`${base}/app`, idp.issuer)
    const cookie = browser
      .cookies(base)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    const api = (headers: Record<string, string>) =>
      fetch(`${base}/api/thing`, { headers: { accept: 'application/json', ...headers } })
    assert.equal((await api({ cookie })).status, 200)

    // The user signs out at the provider itself (its end_session endpoint and confirmation form), not
    // through the gateway: only the provider's logout token can tell the gateway.
    const discovery = (await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json()) as {
      end_session_endpoint: string
      backchannel_logout_supported?: boolean
    }
    assert.equal(discovery.backchannel_logout_supported, true)
    const page = await browser.request(`${discovery.end_session_endpoint}?client_id=${idp.clientId}`)
    const html = await page.text()
    const confirm = await browser.postForm(new URL(formAction(html)!, discovery.end_session_endpoint), {
      ...hiddenInputs(html),
      logout: 'yes',
    })
    await confirm.body?.cancel()
    assert.deepEqual(delivered, ['ok'], 'the provider delivered its logout token and got a 200')

    // A copy of the cookie (not the browser's jar, which the provider never touched) is refused.
    const refused = await api({ cookie })
    assert.equal(refused.status, 401)
    assert.equal(((await refused.json()) as { error: string }).error, 'session_revoked')
    assert.match(refused.headers.getSetCookie().join('\n'), /^gatehouse=; .*Max-Age=0/m)
    const nav = await browserFetch(`${base}/app`, { headers: { cookie, accept: 'text/html' } })
    assert.equal(nav.status, 302)
    assert.ok(nav.headers.get('location')!.startsWith(idp.issuer), 'sent to sign in again')
  })
})
