/**
 * Gatehouse as a benchmark target: the real gateway (`startGateway`) in front of the bench origin,
 * with a provider that is never called (sessions are minted by the parent with the same secret; API
 * tokens by this process, written to BENCH_TOKEN_FILE).
 *
 * Usage: `node bench/gatehouse-child.ts <origin-url>`; prints `gatehouse listening http://127.0.0.1:<port>`.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startGateway } from '../src/app.ts'
import { DEV_LIFETIMES } from '../src/cli/dev-config.ts'
import { validateConfig } from '../src/config/load.ts'
import { silentLogger } from '../src/core/ports.ts'

const originUrl = process.argv[2]
if (originUrl === undefined) {
  process.stderr.write('usage: node bench/gatehouse-child.ts <origin-url>\n')
  process.exit(2)
}
// BENCH_APPS=1: the same origin as three apps (config `apps`); the load is sent to the second, b.localhost.
const apps = process.env['BENCH_APPS'] === '1'
const config = validateConfig({
  public_url: 'http://localhost:8080',
  ...(apps
    ? {
        apps: [
          {
            name: 'a',
            host: 'a.localhost',
            upstream: originUrl,
            routes: [{ path: '/*', allow: { groups: ['ops'] } }],
          },
          { name: 'b', host: 'b.localhost', upstream: originUrl },
          { name: 'c', host: 'b.localhost', path_prefix: '/c', upstream: originUrl },
        ],
      }
    : { upstream: originUrl }),
  data_dir: mkdtempSync(join(tmpdir(), 'gh-bench-')),
  listen: { host: '127.0.0.1', port: 0 },
  // Nothing listens on port 9: discovery fails in the background, which a valid session never needs.
  provider: {
    issuer: 'http://127.0.0.1:9/idp',
    client_id: 'bench',
    client_secret: { env: 'GATEHOUSE_BENCH_SECRET' },
  },
  session: { secrets: [{ env: 'GATEHOUSE_BENCH_SECRET' }] },
  lifetimes: DEV_LIFETIMES,
  shutdown: { drain: '1s' },
  // Limits so high they never trip: the benchmark measures their cost, not their refusals.
  rate_limits: {
    client: { points: 100_000_000, per: 60 },
    credential: { points: 100_000_000, per: 60 },
    auth_endpoints: { points: 100_000_000, per: 60 },
  },
})
const gateway = await startGateway(config, { baseDir: process.cwd(), log: silentLogger, admin: false })
// For the API-token target: a token issued by this gateway's own key ring, handed to the parent in a file.
const tokenFile = process.env['BENCH_TOKEN_FILE']
if (tokenFile !== undefined) {
  const { token } = await gateway.services.tokens.issue({ subject: 'bench-bot', scopes: ['read'] })
  writeFileSync(tokenFile, token)
}
process.stdout.write(`gatehouse listening ${gateway.url}\n`)
const stop = () => {
  gateway.close().then(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
if (process.env['BENCH_CHILD'] === '1') {
  process.stdin.once('end', stop)
  process.stdin.resume()
}
