/**
 * The status page on the admin port: server-rendered, no JavaScript, everything escaped. In real
 * Chromium (as the sign-in test): it renders, the timeline marks the soonest expiry, a screenshot is
 * taken, and the console stays clean (a CSP violation would show there).
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { escapeHTML, renderTimeline, STATUS_PAGE_CSP } from '../../src/admin/status-page.ts'
import { startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { clientSecretEntry } from '../../src/expiry/inventory.ts'
import { makeCertificate } from '../helpers/certs.ts'

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium'
const missing = !existsSync(CHROMIUM)
if (missing && process.env['CI'] === 'true')
  throw new Error(`Chromium is required under CI but ${CHROMIUM} is missing`)
const SECRET = 'status-page-test-secret-0123456789-abcdef'
const EVIL = '<script>alert("pwned")</script>'
const DAY = 86_400

describe('status page', () => {
  it('escapes everything it shows, in text and attributes', () => {
    assert.equal(
      escapeHTML(`<a href="x" onclick='y'>&</a>`),
      '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;',
    )
    const now = 1_767_225_600
    const svg = renderTimeline([clientSecretEntry(EVIL, now + 3 * DAY, now)], now, 30 * DAY, [
      30 * DAY,
      7 * DAY,
      DAY,
    ])
    assert.ok(!svg.includes('<script'), svg)
    assert.match(svg, /id="soonest"/)
    assert.match(svg, /soonest: &lt;script&gt;alert\(&quot;pwned&quot;\)&lt;\/script&gt; in 3d/)
    assert.match(STATUS_PAGE_CSP, /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/]+=*'; /)
  })

  it('renders in Chromium: the timeline marks the soonest expiry, no console errors, nothing runs', {
    skip: missing ? `no Chromium at ${CHROMIUM}` : false,
  }, async () => {
    const cert = makeCertificate({ days: 5, cn: 'status-upstream.test' })
    const tlsServer = createServer({ cert: cert.certPem, key: cert.keyPem }, (_q, r) => r.end('ok'))
    await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r))
    const port = (tlsServer.address() as AddressInfo).port
    const clock = createFrozenClock(Date.now())
    const config = validateConfig({
      public_url: 'http://localhost:8080',
      upstream: `https://127.0.0.1:${port}`,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-status-')),
      listen: { host: '127.0.0.1', port: 0 },
      provider: {
        issuer: 'http://127.0.0.1:9/idp',
        client_id: 'status-client',
        client_secret: { env: 'S' },
        client_secret_expires: new Date(clock.now() + 60 * DAY * 1000).toISOString().slice(0, 10),
      },
      session: { secrets: [{ env: 'S' }] },
      lifetimes: DEV_LIFETIMES,
    })
    const gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log: silentLogger,
      clock,
      admin: { host: '127.0.0.1', port: 0 },
      env: { S: SECRET },
    })
    const { chromium } = await import('playwright-core')
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--no-first-run',
      ],
    })
    const errors: string[] = []
    try {
      // A token holder whose name is markup: it must show as text.
      await gateway.services.tokens.issue({
        subject: EVIL,
        ttlSeconds: 20 * DAY,
        description: '<img src=x onerror=alert(1)>',
      })
      await gateway.expiry.run()
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') errors.push(m.text())
      })
      page.on('pageerror', (e) => errors.push(e.message))
      page.on('dialog', (d) => {
        errors.push(`dialog: ${d.message()}`)
        void d.dismiss()
      })
      const response = await page.goto(`${gateway.adminUrl}/status`)
      assert.equal(response?.status(), 200)
      assert.equal(response?.headers()['content-security-policy'], STATUS_PAGE_CSP)
      assert.equal(await page.title(), 'Gatehouse status')
      const soonest = await page.textContent('#soonest')
      assert.match(soonest ?? '', new RegExp(`soonest: upstream 127\\.0\\.0\\.1:${port} in (5d|4d 23h)$`))
      assert.equal(await page.locator('script').count(), 0, 'no script element, even from a token name')
      assert.equal(await page.locator('img').count(), 0)
      const inventory = (await page.textContent('#inventory')) ?? ''
      assert.ok(inventory.includes(EVIL), 'the name is shown as text')
      assert.ok(inventory.includes('<img src=x onerror=alert(1)>'))
      assert.match(inventory, /client_secret/)
      assert.match((await page.textContent('#provider')) ?? '', /http:\/\/127\.0\.0\.1:9\/idp/)
      assert.equal(await page.locator('#key-table tbody tr').count(), gateway.services.keyRing.list().length)
      assert.match((await page.textContent('#lifetime-table')) ?? '', /derived_token/)
      // The stylesheet applied (pinned by its hash in the CSP): the header is dark.
      const background = await page.evaluate(
        () => getComputedStyle(document.querySelector('header')!).backgroundColor,
      )
      assert.equal(background, 'rgb(17, 24, 39)')
      const shot = join(mkdtempSync(join(tmpdir(), 'gh-shot-')), 'status.png')
      await page.screenshot({ path: shot, fullPage: true })
      assert.ok(statSync(shot).size > 20_000, `screenshot of ${statSync(shot).size} bytes`)
      assert.deepEqual(errors, [])
      console.log(`status page screenshot: ${shot} (${statSync(shot).size} bytes)`)
    } finally {
      await browser.close()
      await gateway.close()
      tlsServer.closeAllConnections()
      tlsServer.close()
    }
  })
})
