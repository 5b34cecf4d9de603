import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import type { Server } from 'node:http'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { createLogger, type Gateway, startGateway } from '../app.ts'
import { createDemoApp } from '../dev/demo-app.ts'
import { createEmbeddedIdP, type EmbeddedIdP } from '../idp/embedded-idp.ts'
import { ensureSecretFile, openDatabase } from './data-dir.ts'
import { CLIENT_ID, devConfig } from './dev-config.ts'
import { installShutdown } from './shutdown.ts'

export interface DevOptions {
  port: number
  dataDir: string
  /** Your own app instead of the demo app. */
  upstream?: string | undefined
  demoPassword?: string | undefined
  adminPort?: number | false
  logLevel?: string
}

export interface DevServer {
  gateway: Gateway
  idp: EmbeddedIdP
  url: string
  demoPassword: string
  close(): Promise<void>
}

function listenDemo(server: Server): Promise<string> {
  return new Promise((ok) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address()
      ok(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`)
    }),
  )
}

/**
 * `gatehouse dev`: the embedded provider under `/_idp`, the gateway and the demo app (or your
 * upstream), on one port, with state in SQLite under the data dir.
 */
export async function startDev(options: DevOptions): Promise<DevServer> {
  const dataDir = resolve(options.dataDir)
  const db = openDatabase(dataDir)
  ensureSecretFile(dataDir, 'session-secret')
  const clientSecret = ensureSecretFile(dataDir, 'client-secret')
  let port = options.port
  if (port === 0) {
    // The issuer URL names the port, so pick it before anything is built.
    const probe = createDemoApp({ signOutPath: '/' })
    port = Number(new URL(await listenDemo(probe)).port)
    await new Promise((r) => probe.close(r))
  }
  const origin = `http://localhost:${port}`
  const idp = await createEmbeddedIdP({
    issuer: `${origin}/_idp`,
    db,
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: clientSecret,
        redirect_uris: [`${origin}/oauth2/callback`],
        post_logout_redirect_uris: [`${origin}/`],
      },
    ],
    accessTokenAudience: CLIENT_ID,
  })

  // The demo user: password from --demo-password, else the one kept in the data dir, else a new one.
  const passwordFile = resolve(dataDir, 'demo-password')
  let demoPassword =
    options.demoPassword ?? (existsSync(passwordFile) ? readFileSync(passwordFile, 'utf8').trim() : '')
  if (demoPassword === '') demoPassword = randomBytes(9).toString('base64url')
  const existing = idp.users.find('demo')
  if (existing === undefined || (await idp.users.verify('demo', demoPassword)) === null) {
    if (existing !== undefined) idp.users.remove('demo')
    await idp.users.add('demo', demoPassword, {
      email: 'demo@example.com',
      emailVerified: true,
      name: 'Demo User',
      groups: ['demo'],
    })
  }
  writeFileSync(passwordFile, demoPassword + '\n', { mode: 0o600 })

  let demo: Server | undefined
  let upstream = options.upstream
  if (upstream === undefined) {
    demo = createDemoApp({ signOutPath: '/oauth2/sign_out' })
    upstream = await listenDemo(demo)
  }
  const config = devConfig({ dataDir, port, upstream, logLevel: options.logLevel })
  // Commands such as `gatehouse tokens issue --data DIR` find the running dev server's origin here.
  writeFileSync(resolve(dataDir, 'dev-origin'), `${origin}\n`)
  const gateway = await startGateway(config, {
    baseDir: dataDir,
    log: createLogger(config.log.level),
    mounts: [{ prefix: '/_idp', handler: idp.handler }],
    admin: options.adminPort === false ? false : { host: '127.0.0.1', port: options.adminPort ?? 9090 },
    alsoIPv6Loopback: true,
  })
  return {
    gateway,
    idp,
    url: origin,
    demoPassword,
    async close() {
      await gateway.close()
      await new Promise((r) => (demo ? demo.close(r) : r(undefined)))
      await idp.close()
      db.close()
    },
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8080' },
      data: { type: 'string', default: '.gatehouse' },
      upstream: { type: 'string' },
      'demo-password': { type: 'string' },
      'admin-port': { type: 'string', default: '9090' },
      'log-level': { type: 'string', default: 'info' },
    },
  })
  const dev = await startDev({
    port: Number(values.port),
    dataDir: values.data,
    upstream: values.upstream,
    demoPassword: values['demo-password'],
    adminPort: Number(values['admin-port']),
    logLevel: values['log-level'],
  })
  process.stdout.write(`
  Gatehouse dev is running.

    Open        ${dev.url}
    Sign in as  demo / ${dev.demoPassword}
    Upstream    ${values.upstream ?? 'the demo app (shows who you are)'}
    Admin       ${dev.gateway.adminUrl ?? 'off'}  (/healthz /readyz /metrics)
    Data        ${resolve(values.data)}

  Stop with Ctrl-C.
`)
  installShutdown(() => dev.close())
  return 0
}
