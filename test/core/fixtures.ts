import { createFrozenClock } from '../../src/core/clock.ts'
import type { RequestFacts } from '../../src/core/decisions.ts'
import { ProviderRejectedError } from '../../src/core/errors.ts'
import { createGatehouse, type GatehouseDeps, type GatehouseOptions } from '../../src/core/gatehouse.ts'
import { createMemoryOneTimeStore } from '../../src/core/one-time-store.ts'
import type { OIDCPort, TokenResult } from '../../src/core/ports.ts'
import { createSessionCodec } from '../../src/core/session-codec.ts'

export const SECRET = 'a-test-secret-that-is-long-enough-0123456789'
export const START = Date.UTC(2026, 10, 23, 12, 0, 0)

/**
 * A scripted identity provider behind the OIDC port: the unit tests of the core decide what it
 * answers. (The integration tests use a real oidc-provider.)
 */
export function createScriptedProvider() {
  const calls = { authorize: 0, exchange: 0, refresh: 0, revoke: 0, endSession: 0 }
  let lastExpected: { state: string; nonce: string; codeVerifier: string } | undefined
  const state = {
    claims: {
      sub: 'user-1',
      email: 'alice@example.com',
      groups: ['staff'],
      preferred_username: 'alice',
    } as Record<string, unknown>,
    accessTtl: 3600,
    exchange: undefined as undefined | ((expected: { nonce: string }) => Promise<TokenResult>),
    refresh: undefined as undefined | (() => Promise<TokenResult>),
    refreshCount: 0,
    now: () => START,
  }
  const tokens = (n: number): TokenResult => ({
    accessToken: `access-${n}`,
    accessTokenExpiresAt: Math.floor(state.now() / 1000) + state.accessTtl,
    refreshToken: `refresh-${n}`,
    idToken: `id-${n}`,
    claims: state.claims,
  })
  const port: OIDCPort = {
    async authorizationUrl({ state: st, nonce, codeChallenge }) {
      calls.authorize++
      return `https://idp.example/authorize?state=${st}&nonce=${nonce}&code_challenge=${codeChallenge}`
    },
    async exchangeCode(_params, expected) {
      calls.exchange++
      lastExpected = expected
      if (state.exchange) return state.exchange(expected)
      return tokens(0)
    },
    async refresh(rt) {
      calls.refresh++
      if (state.refresh) return state.refresh()
      if (!rt.startsWith('refresh-'))
        throw new ProviderRejectedError('invalid_grant', 'unknown refresh token')
      state.refreshCount++
      return tokens(state.refreshCount)
    },
    async endSessionUrl({ idTokenHint, postLogoutRedirectUri }) {
      calls.endSession++
      return `https://idp.example/logout?id_token_hint=${idTokenHint}&post_logout_redirect_uri=${encodeURIComponent(postLogoutRedirectUri)}`
    },
    async revoke() {
      calls.revoke++
    },
  }
  return { port, calls, state, lastExpected: () => lastExpected }
}

export function facts(
  url: string,
  init: { method?: string; headers?: Record<string, string>; ip?: string } = {},
): RequestFacts {
  const headers = Object.fromEntries(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]))
  return {
    method: init.method ?? 'GET',
    url,
    header: (name) => headers[name],
    clientAddress: init.ip ?? '127.0.0.1',
  }
}

export const NAV = { accept: 'text/html,application/xhtml+xml', 'sec-fetch-mode': 'navigate' }
export const API = { accept: 'application/json' }

export async function setup(
  overrides: Partial<GatehouseOptions> = {},
  publicUrl = 'https://app.example.com',
  extraDeps: Partial<GatehouseDeps> = {},
) {
  const clock = createFrozenClock(START)
  const provider = createScriptedProvider()
  provider.state.now = () => clock.now()
  const secure = publicUrl.startsWith('https:')
  const codec = await createSessionCodec({
    secrets: [SECRET],
    cookieName: secure ? '__Host-gatehouse' : 'gatehouse',
    secure,
    clock,
  })
  const logs: Array<{ obj: object; msg?: string | undefined }> = []
  const log = {
    debug: (obj: object, msg?: string) => logs.push({ obj, msg }),
    info: (obj: object, msg?: string) => logs.push({ obj, msg }),
    warn: (obj: object, msg?: string) => logs.push({ obj, msg }),
    error: (obj: object, msg?: string) => logs.push({ obj, msg }),
  }
  const gatehouse = createGatehouse(
    {
      publicUrl,
      routes: [
        { path: '/public/*', access: { kind: 'anonymous' } },
        {
          path: '/admin/*',
          access: { kind: 'restricted', groups: ['admins'], emails: ['boss@example.com'] },
        },
      ],
      session: { ttlSeconds: 12 * 3600, maxTtlSeconds: 7 * 86400, refreshBeforeSeconds: 600 },
      signInTtlSeconds: 600,
      mapping: { userClaim: 'sub', groupsClaim: 'groups' },
      passAccessToken: false,
      ...overrides,
    },
    { clock, oidc: provider.port, codec, oneTime: createMemoryOneTimeStore(clock), log, ...extraDeps },
  )
  return { gatehouse, clock, provider, codec, logs }
}

/** Cookie header value (name=value pairs) from Set-Cookie lines, skipping deletions. */
export function cookieHeaderFrom(setCookies: string[], jar: Map<string, string> = new Map()): string {
  for (const c of setCookies) {
    const pair = c.split(';')[0]!
    const eq = pair.indexOf('=')
    const name = pair.slice(0, eq)
    const value = pair.slice(eq + 1)
    if (/Max-Age=0/.test(c)) jar.delete(name)
    else jar.set(name, value)
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
}

/** Runs the sign-in: navigation → redirect with state cookie → callback. Returns the session cookie header. */
export async function signIn(g: Awaited<ReturnType<typeof setup>>, path = '/dashboard') {
  const first = await g.gatehouse.handle(facts(path, { headers: NAV }))
  if (first.kind !== 'respond' || first.status !== 302) throw new Error('expected a redirect to sign in')
  const location = new URL(first.headers['location']!)
  const state = location.searchParams.get('state')!
  const jar = new Map<string, string>()
  const stateCookie = cookieHeaderFrom(first.setCookies, jar)
  const cb = await g.gatehouse.handle(
    facts(`/oauth2/callback?code=abc&state=${state}`, { headers: { ...NAV, cookie: stateCookie } }),
  )
  if (cb.kind !== 'respond' || cb.status !== 302) throw new Error(`callback failed: ${JSON.stringify(cb)}`)
  const cookie = cookieHeaderFrom(cb.setCookies, jar)
  return { cookie, callback: cb, state, stateCookie, jar }
}
