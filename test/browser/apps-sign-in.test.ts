/**
 * A real browser (Debian's Chromium, driven by playwright-core) against two apps under one cookie domain
 * (`session.cookie_domain`) and two real providers (`providers`): the app sends it to the chooser at
 * public_url, it picks a provider, signs in there, comes back to the app, and the other app already knows
 * it. Proves what only a browser can: that it keeps a `Domain=` cookie for `*.localhost` hosts and sends
 * it to the second host. Skips loudly when Chromium is missing locally; under CI=true it must run.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { chromiumMissing, launchChromium } from '../helpers/chromium.ts'
import { freePort, startRecordingUpstream } from '../helpers/net.ts'
import { startTestIdP } from '../helpers/test-idp.ts'

const skip = chromiumMissing('the apps browser test')

test('Chromium: the chooser, a sign-in at public_url, and one session for two app hosts', {
  skip: skip ?? false,
}, async () => {
  const port = await freePort()
  const at = (host: string, path: string) => `http://${host}.apps.localhost:${port}${path}`
  const [corp, contractors] = await Promise.all(
    ['corp', 'contractors'].map((name) =>
      startTestIdP({ redirectUris: [at('gate', `/oauth2/callback/${name}`)], clientId: `gh-${name}` }),
    ),
  )
  await contractors!.users.add('carl', 'contractor password 1', { groups: ['contractors'] })
  const [grafana, wiki] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
  const provider = (name: string, title: string, idp: NonNullable<typeof corp>, env: string) => ({
    name,
    title,
    issuer: idp.issuer,
    client_id: idp.clientId,
    client_secret: { env },
  })
  const gateway = await startGateway(
    validateConfig({
      public_url: at('gate', ''),
      data_dir: mkdtempSync(join(tmpdir(), 'gh-browser-apps-')),
      providers: [
        provider('corp', 'Company account', corp!, 'CORP'),
        provider('contractors', 'Contractor account', contractors!, 'CONTRACTORS'),
      ],
      session: { secrets: [{ env: 'SS' }], cookie_domain: 'apps.localhost' },
      lifetimes: DEV_LIFETIMES,
      apps: [
        { name: 'grafana', host: 'grafana.apps.localhost', upstream: grafana.url },
        { name: 'wiki', host: 'wiki.apps.localhost', upstream: wiki.url },
      ],
    }),
    {
      baseDir: process.cwd(),
      log: silentLogger,
      admin: false,
      listen: { host: '127.0.0.1', port },
      env: {
        CORP: corp!.clientSecret,
        CONTRACTORS: contractors!.clientSecret,
        SS: 'browser-apps-test-session-secret-0123456789',
      },
    },
  )
  const browser = await launchChromium()
  const errors: string[] = []
  try {
    const page = await browser.newPage()
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(at('grafana', '/d/1?x=1'))
    // The chooser at public_url.
    await page.waitForSelector('text=Contractor account')
    assert.ok(page.url().startsWith(at('gate', '/oauth2/sign_in?rd=')), page.url())
    assert.match(await page.content(), /Company account/)
    await page.click('text=Contractor account')
    // The contractors provider's own sign-in page.
    await page.waitForSelector('input[name="password"]')
    assert.ok(page.url().startsWith(contractors!.issuer), page.url())
    await page.fill('input[name="username"]', 'carl')
    await page.fill('input[name="password"]', 'contractor password 1')
    await page.click('#sign-in')
    await page.waitForURL(at('grafana', '/d/1?x=1'))
    assert.match((await page.textContent('body')) ?? '', /"path":"\/d\/1\?x=1"/)
    // The browser may also ask for /favicon.ico, at any moment: look for the page's own request.
    const dashboard = grafana.requests.find((r) => r.url === '/d/1?x=1')!
    assert.equal(dashboard.headers['x-auth-request-preferred-username'], 'carl')
    assert.equal(dashboard.headers['x-auth-request-provider'], 'contractors')
    const session = (await page.context().cookies()).find((c) => c.name === 'gatehouse')
    assert.ok(session, 'session cookie set')
    assert.equal(session.domain, '.apps.localhost')
    assert.equal(session.httpOnly, true)
    assert.equal(session.sameSite, 'Lax')

    // The other app host: no chooser, no provider, the same session.
    const pages = () => wiki.requests.filter((r) => r.url === '/page')
    await page.goto(at('wiki', '/page'))
    assert.equal(page.url(), at('wiki', '/page'))
    assert.equal(pages().length, 1)
    assert.equal(pages()[0]!.headers['x-auth-request-preferred-username'], 'carl')
    assert.deepEqual(errors, [])
  } finally {
    await browser.close()
    await gateway.close()
    await Promise.all([grafana.close(), wiki.close(), corp!.close(), contractors!.close()])
  }
})
