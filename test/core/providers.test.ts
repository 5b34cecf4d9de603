/**
 * Several providers in the decision core (docs/providers.md): which provider an app accepts, sessions of
 * a provider gone from the config, provider-scoped revocations (the same `sub` at two providers is two
 * people), and bearer tokens matched to their provider by `iss`.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type BearerResult, type BearerVerifier, createBearerByIssuer } from '../../src/core/bearer.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import type { Decision, RequestFacts } from '../../src/core/decisions.ts'
import { type CoreProvider, createGatehouse, type GatehouseOptions } from '../../src/core/gatehouse.ts'
import type { Identity } from '../../src/core/identity.ts'
import { createMemoryOneTimeStore } from '../../src/core/one-time-store.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createSessionCodec } from '../../src/core/session-codec.ts'
import { createSessionRevocationList } from '../../src/core/session-revocations.ts'
import { API, cookieHeaderFrom, createScriptedProvider, facts, NAV, SECRET, START } from './fixtures.ts'

const MAPPING = { userClaim: 'sub', groupsClaim: 'groups' }

async function world() {
  const clock = createFrozenClock(START)
  const codec = await createSessionCodec({ secrets: [SECRET], cookieName: 'gatehouse', secure: false, clock })
  const corp = createScriptedProvider()
  const contractors = createScriptedProvider()
  for (const p of [corp, contractors]) p.state.now = () => clock.now()
  // The same `sub` at both: two different people.
  corp.state.claims = { sub: 'user-1', groups: ['ops'] }
  contractors.state.claims = { sub: 'user-1', groups: ['contractors'] }
  const logout = { next: { sid: undefined as string | undefined, sub: 'user-1' as string | undefined } }
  const providers = (names: string[]): CoreProvider[] =>
    names.map((name) => ({
      name,
      title: name === 'corp' ? 'Company account' : name === 'contractors' ? 'Contractor account' : name,
      oidc: name === 'contractors' ? contractors.port : corp.port,
      issuer: `https://${name}.example`,
      outageGraceSeconds: 3600,
      logoutToken: async () => ({
        ok: true as const,
        ...logout.next,
        jti: `jti-${Math.random()}`,
        signedInBefore: Math.floor(clock.now() / 1000),
        replayUntil: Math.floor(clock.now() / 1000) + 600,
      }),
    }))
  const revocations = createSessionRevocationList({ clock, log: silentLogger, maxTtlSeconds: 7 * 86400 })
  const oneTime = createMemoryOneTimeStore(clock)
  const core = (
    configured: string[] | undefined,
    accepted?: string[],
    extra: Partial<GatehouseOptions> = {},
  ) =>
    createGatehouse(
      {
        publicUrl: 'http://localhost:8080',
        routes: [],
        session: { ttlSeconds: 12 * 3600, maxTtlSeconds: 7 * 86400, refreshBeforeSeconds: 600 },
        signInTtlSeconds: 600,
        mapping: MAPPING,
        passAccessToken: false,
        providers: accepted,
        ...extra,
      },
      {
        clock,
        oidc: corp.port,
        codec,
        oneTime,
        log: silentLogger,
        sessionRevocations: revocations,
        providers: configured === undefined ? undefined : providers(configured),
      },
    )
  return { clock, codec, corp, contractors, core, revocations, logout }
}

type Core = ReturnType<Awaited<ReturnType<typeof world>>['core']>

function respond(d: Decision) {
  assert.equal(d.kind, 'respond')
  return d as Extract<Decision, { kind: 'respond' }>
}

/** Signs in through `provider` at `core`; the session cookie header. */
async function signInWith(core: Core, provider: string): Promise<string> {
  const start = respond(
    await core.handle(facts(`/oauth2/sign_in?provider=${provider}&rd=/x`, { headers: NAV })),
  )
  assert.equal(start.status, 302)
  const state = new URL(start.headers['location']!).searchParams.get('state')!
  const jar = new Map<string, string>()
  const stateCookie = cookieHeaderFrom(start.setCookies, jar)
  const cb = respond(
    await core.handle(
      facts(`/oauth2/callback/${provider}?code=c&state=${state}`, {
        headers: { ...NAV, cookie: stateCookie },
      }),
    ),
  )
  assert.equal(cb.status, 302, cb.body)
  return cookieHeaderFrom(cb.setCookies, jar)
}

function backchannel(core: Core, provider: string): Promise<Decision> {
  const f: RequestFacts = {
    ...facts(`/oauth2/backchannel_logout/${provider}`, { method: 'POST' }),
    form: async () => new URLSearchParams({ logout_token: 'x.y.z' }),
  }
  return core.handle(f)
}

describe('providers in the core', () => {
  test('an app that accepts one provider sends a navigation straight to it, and refuses the others', async () => {
    const w = await world()
    const corpOnly = w.core(['corp', 'contractors'], ['corp'])
    const nav = respond(await corpOnly.handle(facts('/page', { headers: NAV })))
    assert.equal(nav.status, 302)
    assert.ok(
      nav.headers['location']!.startsWith('https://idp.example/authorize'),
      'no chooser with one choice',
    )
    assert.equal(w.corp.calls.authorize, 1)
    assert.equal(w.contractors.calls.authorize, 0)
    const other = respond(
      await corpOnly.handle(facts('/oauth2/sign_in?provider=contractors', { headers: API })),
    )
    assert.equal(other.status, 400)
    assert.equal(other.code, 'unknown_provider')
    assert.equal(w.contractors.calls.authorize, 0)
    const cb = respond(await corpOnly.handle(facts('/oauth2/callback/contractors?code=c&state=s')))
    assert.equal(cb.status, 404, 'no callback for a provider the app does not offer')
  })

  test('a session of a provider the app does not accept: not signed in here, the cookie kept for the others', async () => {
    const w = await world()
    const both = w.core(['corp', 'contractors'])
    const corpOnly = w.core(['corp', 'contractors'], ['corp'])
    const cookie = await signInWith(both, 'contractors')
    assert.equal((await both.handle(facts('/page', { headers: { cookie } }))).kind, 'allow')
    const api = respond(await corpOnly.handle(facts('/page', { headers: { ...API, cookie } })))
    assert.equal(api.status, 401)
    assert.equal(api.code, 'provider_not_accepted')
    assert.deepEqual(api.setCookies, [], 'the session is not cleared')
    const nav = respond(await corpOnly.handle(facts('/page', { headers: { ...NAV, cookie } })))
    assert.equal(nav.status, 302)
    assert.ok(nav.headers['location']!.startsWith('https://idp.example/authorize'))
    assert.equal(w.contractors.calls.refresh, 0)
  })

  test('a session whose provider left the config ends: 401 session_expired, cookie cleared, refused from then on', async () => {
    const w = await world()
    const cookie = await signInWith(w.core(['corp', 'contractors']), 'contractors')
    const after = w.core(['corp'])
    const r = respond(await after.handle(facts('/page', { headers: { ...API, cookie } })))
    assert.equal(r.status, 401)
    assert.equal(r.code, 'session_expired')
    assert.ok(r.setCookies.some((c) => c.startsWith('gatehouse=;')))
    assert.equal(after.classify(facts('/page', { headers: { cookie } })), 'rejected')
  })

  test('a back-channel logout ends the sessions of its provider only; a bare sub revocation ends both', async () => {
    const w = await world()
    const core = w.core(['corp', 'contractors'])
    const corpCookie = await signInWith(core, 'corp')
    w.clock.advance(1000)
    const contractorCookie = await signInWith(core, 'contractors')
    w.clock.advance(1000)
    // user-1 at contractors logs out at contractors: user-1 at corp is someone else.
    const ended = respond(await backchannel(core, 'contractors'))
    assert.equal(ended.status, 200)
    const c = respond(await core.handle(facts('/page', { headers: { ...API, cookie: contractorCookie } })))
    assert.equal(c.code, 'session_revoked')
    assert.equal((await core.handle(facts('/page', { headers: { cookie: corpCookie } }))).kind, 'allow')
    // The bare endpoint does not exist with a providers list.
    assert.equal(
      respond(await core.handle(facts('/oauth2/backchannel_logout', { method: 'POST' }))).status,
      404,
    )
    // `gatehouse sessions revoke --user user-1 --provider corp` stores `corp:user-1`: corp's user only.
    w.clock.advance(1000)
    const third = await signInWith(core, 'contractors')
    w.clock.advance(1000)
    await w.revocations.revoke([{ kind: 'sub', value: 'corp:user-1' }])
    assert.equal((await core.handle(facts('/page', { headers: { cookie: third } }))).kind, 'allow')
    const corpAgain = respond(await core.handle(facts('/page', { headers: { ...API, cookie: corpCookie } })))
    assert.equal(corpAgain.code, 'session_revoked')
    // `gatehouse sessions revoke --user user-1` without --provider: the sub at every provider.
    await w.revocations.revoke([{ kind: 'sub', value: 'user-1' }])
    const o = respond(await core.handle(facts('/page', { headers: { ...API, cookie: third } })))
    assert.equal(o.code, 'session_revoked')
  })

  test('a provider session id is the provider`s: a logout naming it at one provider spares the other', async () => {
    const w = await world()
    w.corp.state.claims = { sub: 'a', sid: 'psid-1' }
    w.contractors.state.claims = { sub: 'b', sid: 'psid-1' }
    const core = w.core(['corp', 'contractors'])
    const corpCookie = await signInWith(core, 'corp')
    const contractorCookie = await signInWith(core, 'contractors')
    w.clock.advance(1000)
    w.logout.next = { sid: 'psid-1', sub: undefined }
    assert.equal(respond(await backchannel(core, 'corp')).status, 200)
    assert.equal(
      respond(await core.handle(facts('/page', { headers: { ...API, cookie: corpCookie } }))).code,
      'session_revoked',
    )
    assert.equal((await core.handle(facts('/page', { headers: { cookie: contractorCookie } }))).kind, 'allow')
  })

  test('a session from before the list is the first provider`s: named upstream, ended by its logouts', async () => {
    const w = await world()
    const lone = w.core(undefined)
    const start = respond(await lone.handle(facts('/x', { headers: NAV })))
    const state = new URL(start.headers['location']!).searchParams.get('state')!
    const jar = new Map<string, string>()
    const cb = respond(
      await lone.handle(
        facts(`/oauth2/callback?code=c&state=${state}`, {
          headers: { ...NAV, cookie: cookieHeaderFrom(start.setCookies, jar) },
        }),
      ),
    )
    assert.equal(cb.status, 302)
    const cookie = cookieHeaderFrom(cb.setCookies, jar)
    const listed = w.core(['corp', 'contractors'])
    const allowed = await listed.handle(facts('/page', { headers: { cookie } }))
    assert.equal(allowed.kind, 'allow')
    assert.equal(
      (allowed as Extract<Decision, { kind: 'allow' }>).upstreamHeaders['x-auth-request-provider'],
      'corp',
    )
    w.clock.advance(1000)
    assert.equal(respond(await backchannel(listed, 'corp')).status, 200)
    assert.equal(
      respond(await listed.handle(facts('/page', { headers: { ...API, cookie } }))).code,
      'session_revoked',
    )
  })

  test('a shared sign-in: an app sends a browser to it naming its providers; the chooser there offers only those', async () => {
    const w = await world()
    const all = ['corp', 'contractors', 'partners']
    const shared = { origin: 'http://gate.localhost:8080', returnOrigins: ['http://localhost:8080'] }
    const app = w.core(all, ['contractors', 'partners'], { sharedSignIn: shared })
    const nav = respond(await app.handle(facts('/page?x=1', { headers: NAV })))
    assert.equal(nav.status, 302)
    assert.equal(
      nav.headers['location'],
      `http://gate.localhost:8080/oauth2/sign_in?rd=${encodeURIComponent('http://localhost:8080/page?x=1')}&providers=contractors%2Cpartners`,
    )
    // One of several: named, so the sign-in host skips its chooser.
    const one = w.core(all, ['partners'], { sharedSignIn: shared })
    const direct = respond(await one.handle(facts('/page', { headers: NAV })))
    assert.match(direct.headers['location']!, /&provider=partners$/)
    // The sign-in host (its own origin is the shared one) reads the hint; an unknown one offers all.
    const gate = w.core(all, undefined, { publicUrl: 'http://gate.localhost:8080', sharedSignIn: shared })
    const offered = async (query: string) => {
      const r = respond(await gate.handle(facts(`/oauth2/sign_in?rd=/&${query}`, { headers: API })))
      return r.status === 200
        ? (JSON.parse(r.body) as { providers: Array<{ name: string }> }).providers.map((p) => p.name)
        : r.status
    }
    assert.deepEqual(await offered('providers=contractors,partners'), ['contractors', 'partners'])
    assert.deepEqual(await offered('providers=evil'), all)
    assert.deepEqual(await offered('providers=partners,evil'), 302, 'one left: straight to it')
  })

  test('the forward-auth answer names the provider of the session', async () => {
    const w = await world()
    const core = w.core(['corp', 'contractors'])
    const anon = respond(await core.handle(facts('/oauth2/auth', { headers: { 'x-forwarded-uri': '/x' } })))
    assert.equal(anon.status, 401)
    const cookie = await signInWith(core, 'contractors')
    const ok = respond(
      await core.handle(facts('/oauth2/auth', { headers: { cookie, 'x-forwarded-uri': '/x' } })),
    )
    assert.equal(ok.status, 202)
    assert.equal(ok.headers['x-auth-request-provider'], 'contractors')
  })
})

describe('bearer tokens with several providers', () => {
  const jwt = (payload: Record<string, unknown>) =>
    `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2ln`
  const identity: Identity = { sub: 'u', user: 'u', groups: [] }
  function verifier(result: BearerResult) {
    const calls: string[] = []
    const v: BearerVerifier = {
      async verify(token) {
        calls.push(token)
        return result
      },
      forget() {},
    }
    return { v, calls }
  }

  test('each token goes to the provider its iss names; other issuers are refused without a verifier', async () => {
    const a = verifier({ ok: true, identity, expiresAt: 9e9, token: 't' })
    const b = verifier({ ok: false, code: 'invalid_token', reason: 'bad signature' })
    const bearer = createBearerByIssuer([
      { name: 'corp', issuer: 'https://corp.example', verifier: a.v },
      { name: 'contractors', issuer: 'https://contractors.example', verifier: b.v },
    ])
    const ok = await bearer.verify(jwt({ iss: 'https://corp.example' }))
    assert.ok(ok.ok)
    assert.equal(ok.identity.provider, 'corp')
    assert.notEqual(ok.identity, identity, 'a copy: the verifier’s identity is not changed')
    const again = await bearer.verify(jwt({ iss: 'https://corp.example' }))
    assert.ok(again.ok)
    assert.equal(again.identity, ok.identity, 'one identity object per verified one (headers stay cached)')
    const bad = await bearer.verify(jwt({ iss: 'https://contractors.example' }))
    assert.equal(bad.ok, false)
    assert.equal(b.calls.length, 1)
    for (const token of [jwt({ iss: 'https://evil.example' }), jwt({}), 'not-a-jwt', jwt({ iss: 7 })]) {
      const r = await bearer.verify(token)
      assert.equal(r.ok, false, token)
    }
    assert.equal(a.calls.length + b.calls.length, 3, 'no verifier saw the other tokens')
  })

  test('an app that does not accept a provider refuses its tokens before any verifier', async () => {
    const a = verifier({ ok: true, identity, expiresAt: 9e9, token: 't' })
    const bearer = createBearerByIssuer(
      [{ name: 'contractors', issuer: 'https://contractors.example', verifier: a.v }],
      new Set(['corp']),
    )
    const r = await bearer.verify(jwt({ iss: 'https://contractors.example' }))
    assert.equal(r.ok, false)
    assert.equal(a.calls.length, 0)
  })
})
