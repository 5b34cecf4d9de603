/** Debian's Chromium for the browser tests, driven by playwright-core: where it is, and how it starts. */
import { existsSync } from 'node:fs'

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium'

/** Why a browser test cannot run here (undefined when it can); under CI=true a missing Chromium throws. */
export function chromiumMissing(what: string): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  if (process.env['CI'] === 'true')
    throw new Error(`Chromium is required under CI but ${CHROMIUM} is missing`)
  console.warn(`\n*** SKIPPING ${what}: no Chromium at ${CHROMIUM} (apt-get install -y chromium) ***\n`)
  return `no Chromium at ${CHROMIUM}`
}

/** Headless Chromium with nothing of its own going to the network. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core')
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
    ],
  })
}
