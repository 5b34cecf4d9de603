// A real embedded IdP on a random loopback port, with one client and a demo user, for tests.

import { createPrivateKey, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { DatabaseSync } from 'node:sqlite'

import { createEmbeddedIdP, type EmbeddedIdP } from '../../src/idp/embedded-idp.ts'
import { loadOrCreateKeyMaterial } from '../../src/idp/key-material.ts'
import type { UserStore } from '../../src/idp/users.ts'
import { browserFetch } from './browser-fetch.ts'
import { type CookieClient, createCookieClient, type FollowResult } from './cookie-client.ts'

export const DEMO_USER = Object.freeze({
  username: 'alice',
  password: 'correct horse',
  email: 'alice@example.com',
  name: 'Alice Example',
  groups: Object.freeze(['admins', 'staff']),
})

export interface TestIdPOptions {
  redirectUris: string[]
  postLogoutRedirectUris?: string[]
  /** The client's OIDC Back-Channel Logout endpoint; none by default. */
  backchannelLogoutUri?: string
  /** Default `'gatehouse-test'`. */
  clientId?: string
  /** Default: random. */
  clientSecret?: string
  /** How the client authenticates at the token endpoint; default client_secret_basic. */
  clientAuthMethod?: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none'
  /** private_key_jwt: the client's public keys. */
  clientJwks?: { keys: Record<string, unknown>[] }
  /** Default: the client id. */
  accessTokenAudience?: string
  accessTokenTtlSeconds?: number
  idTokenTtlSeconds?: number
  refreshTokenTtlSeconds?: number
  sessionTtlSeconds?: number
  /** Default: a fresh `':memory:'` database, closed by `close()`. A given one is left open. */
  db?: DatabaseSync
  /**
   * The origin the provider says it is at (its issuer is `<issuerOrigin>/_idp`), when something such as a
   * fault-injecting proxy stands in front of it. Default: its own `http://127.0.0.1:<port>`.
   */
  issuerOrigin?: string
  /** Default 0 (random). Pass the port of a stopped IdP to restart it under the same issuer. */
  port?: number
  /**
   * Default true. Pass false for an IdP that will be restarted on the same port: fetch's pool would otherwise
   * send the next request down a kept-alive socket of the stopped server.
   */
  keepAlive?: boolean
  /**
   * Sign RS256 with this key and publish its certificate as `x5c` in the JWKS (RFC 7517 §4.7), as
   * providers such as Entra ID and AD FS do. PEM, RSA.
   */
  signingCertificate?: { keyPem: string; certPem: string }
  /**
   * Serve HTTPS with this certificate (PEM; the chain, leaf first) instead of plain HTTP, as a provider
   * on a private PKI does: the issuer is then `https://127.0.0.1:<port>/_idp` (unless `issuerOrigin`).
   */
  tls?: { certPem: string; keyPem: string }
}

export interface TestIdP {
  /** `http://127.0.0.1:<port>/_idp` (`https://` with `tls`) */
  readonly issuer: string
  readonly clientId: string
  readonly clientSecret: string
  readonly port: number
  readonly idp: EmbeddedIdP
  readonly users: UserStore
  readonly db: DatabaseSync
  close(): Promise<void>
}

// Cheap scrypt for tests only: the cost is a parameter, not behaviour under test.
const TEST_SCRYPT = { N: 2 ** 10, r: 8, p: 1 }

/**
 * Starts an IdP at `http://127.0.0.1:<port>/_idp` (`https://` with `tls`) with one client and the demo
 * user `alice`.
 */
export async function startTestIdP(options: TestIdPOptions): Promise<TestIdP> {
  const clientId = options.clientId ?? 'gatehouse-test'
  const clientSecret = options.clientSecret ?? randomBytes(24).toString('base64url')
  const ownsDb = options.db === undefined
  const db = options.db ?? new DatabaseSync(':memory:')

  let idp: EmbeddedIdP | undefined
  const keepAlive = options.keepAlive ?? true
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (!keepAlive) res.setHeader('connection', 'close')
    if (idp && (req.url === '/_idp' || req.url?.startsWith('/_idp/') || req.url?.startsWith('/_idp?'))) {
      idp.handler(req, res)
      return
    }
    res.writeHead(404).end()
  }
  const server: Server =
    options.tls === undefined
      ? createServer(handle)
      : createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem }, handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const scheme = options.tls === undefined ? 'http' : 'https'
  const issuer = `${options.issuerOrigin ?? `${scheme}://127.0.0.1:${port}`}/_idp`

  try {
    if (options.signingCertificate !== undefined) publishCertificate(db, options.signingCertificate)
    idp = await createEmbeddedIdP({
      issuer,
      db,
      clients: [
        {
          client_id: clientId,
          ...(options.clientAuthMethod === 'none' || options.clientAuthMethod === 'private_key_jwt'
            ? {}
            : { client_secret: clientSecret }),
          ...(options.clientAuthMethod === undefined
            ? {}
            : { token_endpoint_auth_method: options.clientAuthMethod }),
          ...(options.clientJwks === undefined ? {} : { jwks: options.clientJwks }),
          redirect_uris: options.redirectUris,
          post_logout_redirect_uris: options.postLogoutRedirectUris ?? [],
          ...(options.backchannelLogoutUri === undefined
            ? {}
            : { backchannel_logout_uri: options.backchannelLogoutUri }),
        },
      ],
      accessTokenAudience: options.accessTokenAudience ?? clientId,
      ...ttlOptions(options),
      users: { scrypt: TEST_SCRYPT },
    })
    if (!idp.users.find(DEMO_USER.username)) {
      await idp.users.add(DEMO_USER.username, DEMO_USER.password, {
        email: DEMO_USER.email,
        emailVerified: true,
        name: DEMO_USER.name,
        groups: DEMO_USER.groups,
      })
    }
  } catch (error) {
    server.close()
    if (ownsDb) db.close()
    throw error
  }

  const started = idp
  let closing: Promise<void> | undefined
  return {
    issuer,
    clientId,
    clientSecret,
    port,
    idp: started,
    users: started.users,
    db,
    // Idempotent: a test may stop the provider on purpose, and the suite's cleanup closes it again.
    close() {
      closing ??= (async () => {
        await started.close()
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeAllConnections()
        })
        if (ownsDb) db.close()
      })()
      return closing
    },
  }
}

// Replaces the generated RS256 key by the given one, with its certificate chain as x5c.
function publishCertificate(db: DatabaseSync, cert: { keyPem: string; certPem: string }): void {
  loadOrCreateKeyMaterial(db)
  const jwk = createPrivateKey(cert.keyPem).export({ format: 'jwk' })
  const x5c = [cert.certPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '')]
  const kid = 'x5c-rs256'
  db.prepare("UPDATE idp_keys SET kid = ?, material = ? WHERE use = 'sig' AND alg = 'RS256'").run(
    kid,
    JSON.stringify({ ...jwk, kid, alg: 'RS256', use: 'sig', x5c }),
  )
}

function ttlOptions(options: TestIdPOptions) {
  const result: {
    accessTokenTtlSeconds?: number
    idTokenTtlSeconds?: number
    refreshTokenTtlSeconds?: number
    sessionTtlSeconds?: number
  } = {}
  if (options.accessTokenTtlSeconds !== undefined)
    result.accessTokenTtlSeconds = options.accessTokenTtlSeconds
  if (options.idTokenTtlSeconds !== undefined) result.idTokenTtlSeconds = options.idTokenTtlSeconds
  if (options.refreshTokenTtlSeconds !== undefined)
    result.refreshTokenTtlSeconds = options.refreshTokenTtlSeconds
  if (options.sessionTtlSeconds !== undefined) result.sessionTtlSeconds = options.sessionTtlSeconds
  return result
}

/**
 * Signs in through the IdP's own pages like a browser: follows `authorizeUrl` to the sign-in form, posts
 * `username` and `password` to the form's action, then follows redirects while they stay on the issuer.
 * Returns the first Location outside the issuer (the client's redirect_uri with `code` and `state`) without
 * requesting it. Throws, with the status and page, when the flow stops at a page instead (e.g. wrong password).
 * With a live IdP session the sign-in form is skipped. `issuer` defaults to `authorizeUrl` without its last path
 * segment (`<issuer>/auth`); pass it when `authorizeUrl` is elsewhere, e.g. a gateway's login route.
 */
export async function signIn(
  client: CookieClient,
  authorizeUrl: string | URL,
  username: string,
  password: string,
  issuer?: string,
): Promise<URL> {
  const start = new URL(authorizeUrl)
  const issuerPrefix = issuer === undefined ? issuerPrefixOf(start) : `${issuer.replace(/\/+$/, '')}/`
  let url = start
  let response = await client.request(url)
  for (let hops = 0; hops < 20; hops += 1) {
    const location = response.headers.get('location')
    if (response.status >= 300 && response.status < 400 && location !== null) {
      await response.body?.cancel()
      const next = new URL(location, url)
      if (!next.href.startsWith(issuerPrefix)) return next
      url = next
      response = await client.request(url)
      continue
    }
    const html = await response.text()
    const action = response.status === 200 ? formAction(html) : undefined
    if (action === undefined || !html.includes('name="password"')) {
      throw new Error(`sign-in stopped at ${url.href} with status ${response.status}: ${html.slice(0, 500)}`)
    }
    url = new URL(action, url)
    response = await client.postForm(url, { username, password })
  }
  throw new Error('too many redirects while signing in')
}

// The authorization endpoint is <issuer>/auth, so the issuer is everything before the last path segment.
function issuerPrefixOf(authorizeUrl: URL): string {
  const path = authorizeUrl.pathname.slice(0, authorizeUrl.pathname.lastIndexOf('/'))
  return `${authorizeUrl.origin}${path}/`
}

/** The `action` of the first `<form>` in `html`, HTML entities decoded. */
export function formAction(html: string): string | undefined {
  const match = /<form\b[^>]*\baction="([^"]*)"/i.exec(html)
  return match ? decodeEntities(match[1]!) : undefined
}

/** Hidden input values of the first form, e.g. oidc-provider's logout `xsrf`. */
export function hiddenInputs(html: string): Record<string, string> {
  const fields: Record<string, string> = {}
  for (const match of html.matchAll(/<input\b[^>]*>/gi)) {
    const tag = match[0]
    if (!/type="hidden"/i.test(tag)) continue
    const name = /\bname="([^"]*)"/i.exec(tag)?.[1]
    const value = /\bvalue="([^"]*)"/i.exec(tag)?.[1]
    if (name !== undefined) fields[decodeEntities(name)] = decodeEntities(value ?? '')
  }
  return fields
}

function decodeEntities(value: string): string {
  return value
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&')
}

/**
 * A browser's whole sign-in as the demo user: the protected `url` (a navigation), the redirect to the
 * provider, its form, the callback, and back. Returns the browser and the last response.
 */
export async function signInAt(
  url: string,
  issuer: string,
  browser: CookieClient = createCookieClient({ fetch: browserFetch }),
): Promise<{ browser: CookieClient; done: FollowResult }> {
  const first = await browser.request(url, { headers: { accept: 'text/html' } })
  const location = first.headers.get('location')
  if (first.status !== 302 || location === null) {
    throw new Error(`expected a sign-in redirect from ${url}, got ${first.status}`)
  }
  const callback = await signIn(browser, location, DEMO_USER.username, DEMO_USER.password, issuer)
  const done = await browser.follow(callback, { headers: { accept: 'text/html' } })
  return { browser, done }
}
