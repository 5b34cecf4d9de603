/**
 * A real browser (Debian's Chromium, driven by playwright-core) signs in on `gatehouse dev`, sees the
 * demo page, reloads, signs out. Skips loudly when Chromium is missing locally; under CI=true it must run.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startDev } from '../../src/cli/dev.ts'
import { chromiumMissing, launchChromium } from '../helpers/chromium.ts'

const skip = chromiumMissing('the browser test')

test('sign in, reload and sign out in Chromium on gatehouse dev', {
  skip: skip ?? false,
}, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gh-dev-'))
  const dev = await startDev({
    port: 0,
    dataDir,
    demoPassword: 'browser-test-password',
    adminPort: false,
    logLevel: 'warn',
  })
  const browser = await launchChromium()
  const errors: string[] = []
  try {
    const page = await browser.newPage()
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(`${dev.url}/hello?from=browser`)
    // The embedded provider's sign-in page.
    await page.waitForSelector('input[name="password"]')
    assert.ok(page.url().startsWith(`${dev.url}/_idp/`), page.url())
    await page.fill('input[name="username"]', 'demo')
    await page.fill('input[name="password"]', 'wrong password')
    await page.click('#sign-in')
    await page.waitForSelector('input[name="password"]')
    assert.match(await page.content(), /Wrong username or password/)
    await page.fill('input[name="username"]', 'demo')
    await page.fill('input[name="password"]', 'browser-test-password')
    await page.click('#sign-in')
    await page.waitForSelector('#greeting')
    assert.equal(new URL(page.url()).pathname + new URL(page.url()).search, '/hello?from=browser')
    assert.equal(await page.textContent('#greeting'), 'Hello, demo')
    assert.match((await page.textContent('#identity')) ?? '', /demo@example\.com/)
    const cookies = await page.context().cookies()
    const session = cookies.find((c) => c.name === 'gatehouse')
    assert.ok(session, 'session cookie set')
    assert.equal(session.httpOnly, true)
    assert.equal(session.sameSite, 'Lax')

    await page.reload()
    await page.waitForSelector('#greeting')
    assert.equal(await page.textContent('#greeting'), 'Hello, demo')

    await page.click('#sign-out')
    await page.waitForSelector('#logout-confirm')
    await page.click('#logout-confirm')
    // Back at the app, signed out: the provider asks for the password again.
    await page.waitForSelector('input[name="password"]')
    assert.ok(!(await page.context().cookies()).some((c) => c.name === 'gatehouse'), 'session cookie gone')
    await page.screenshot({ path: join(dataDir, 'signed-out.png') })
    assert.deepEqual(errors, [])
  } finally {
    await browser.close()
    await dev.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
})
