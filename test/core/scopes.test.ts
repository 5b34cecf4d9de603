/**
 * Routes that require token scopes (`allow: { scopes: [...] }`): provider access tokens verified by the
 * real bearer verifier, their `scope` string or `scp` array, and the 403 `insufficient_scope` answers.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT } from 'jose'
import { validateConfig } from '../../src/config/validate.ts'
import { createBearerVerifier } from '../../src/core/bearer.ts'
import { createFrozenClock } from '../../src/core/clock.ts'
import type { Decision } from '../../src/core/decisions.ts'
import { scopesFromClaims } from '../../src/core/identity.ts'
import { compileRoutePolicy } from '../../src/core/route-policy.ts'
import { API, facts, NAV, START, setup, signIn } from './fixtures.ts'

const ISS = 'https://idp.example'
const AUD = 'gatehouse'
const now = Math.floor(START / 1000)

async function scopedSetup() {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
  const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] })
  const bearer = createBearerVerifier(
    {
      issuer: ISS,
      audiences: [AUD],
      audienceClaim: 'aud',
      algorithms: ['ES256'],
      leewaySeconds: 30,
      mapping: { userClaim: 'sub', groupsClaim: 'groups' },
      clock: createFrozenClock(START),
    },
    jwks,
  )
  const g = await setup(
    {
      routes: [
        { path: '/public/*', access: { kind: 'anonymous' } },
        { path: '/api/write/*', access: { kind: 'restricted', groups: [], emails: [], scopes: ['write'] } },
        {
          path: '/api/deploy/*',
          access: { kind: 'restricted', groups: ['ops'], emails: [], scopes: ['deploy', 'read'] },
        },
      ],
    },
    'https://app.example.com',
    { bearer },
  )
  const token = (claims: Record<string, unknown>) =>
    new SignJWT({ sub: 'svc-1', iss: ISS, aud: AUD, iat: now, exp: now + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .sign(privateKey)
  const call = async (path: string, tok: string, headers: Record<string, string> = API) =>
    g.gatehouse.handle(
      facts(path, { method: 'POST', headers: { ...headers, authorization: `Bearer ${tok}` } }),
    )
  return { g, token, call }
}

function respond(d: Decision) {
  assert.equal(d.kind, 'respond', `expected an answer, got ${JSON.stringify(d)}`)
  if (d.kind !== 'respond') throw new Error('unreachable')
  return d
}
function allowed(d: Decision) {
  assert.equal(d.kind, 'allow', `expected allow, got ${JSON.stringify(d)}`)
  if (d.kind !== 'allow') throw new Error('unreachable')
  return d
}

describe('routes that require scopes', () => {
  test('a token with the scopes passes, and the upstream learns them', async () => {
    const { token, call } = await scopedSetup()
    const d = allowed(await call('/api/write/items', await token({ scope: 'read write' })))
    assert.equal(d.upstreamHeaders['x-auth-request-scopes'], 'read write')
    assert.equal(d.upstreamHeaders['x-auth-request-user'], 'svc-1')
    // `scp` as an array (Entra ID, Okta) counts the same.
    const scp = allowed(await call('/api/write/items', await token({ scp: ['write', 'admin'] })))
    assert.equal(scp.upstreamHeaders['x-auth-request-scopes'], 'write admin')
  })

  test('a token without a required scope gets 403 insufficient_scope and never reaches the upstream', async () => {
    const { token, call } = await scopedSetup()
    for (const claims of [{ scope: 'read' }, {}, { scope: 'writer' }, { scp: ['read'] }]) {
      const d = respond(await call('/api/write/items', await token(claims)))
      assert.equal(d.status, 403, JSON.stringify(claims))
      assert.equal(d.code, 'insufficient_scope')
      assert.equal(
        d.headers['www-authenticate'],
        'Bearer realm="gatehouse", error="insufficient_scope", scope="write"',
      )
      assert.deepEqual(JSON.parse(d.body), {
        error: 'insufficient_scope',
        error_description: 'The access token lacks a scope this address requires',
        scope: 'write',
      })
    }
  })

  test('the challenge names every scope the route requires, in order', async () => {
    const { token, call } = await scopedSetup()
    const d = respond(await call('/api/deploy/x', await token({ groups: ['ops'], scope: 'deploy' })))
    assert.equal(d.status, 403)
    assert.equal(
      d.headers['www-authenticate'],
      'Bearer realm="gatehouse", error="insufficient_scope", scope="deploy read"',
    )
  })

  test('scopes and groups: all conditions must hold', async () => {
    const { token, call } = await scopedSetup()
    const both = allowed(await call('/api/deploy/x', await token({ groups: ['ops'], scope: 'read deploy' })))
    assert.equal(both.upstreamHeaders['x-auth-request-groups'], 'ops')
    assert.equal(both.upstreamHeaders['x-auth-request-scopes'], 'read deploy')
    // The scopes without the group: refused as forbidden (no scope would help).
    const noGroup = respond(
      await call('/api/deploy/x', await token({ groups: ['dev'], scope: 'read deploy' })),
    )
    assert.equal(noGroup.status, 403)
    assert.equal(noGroup.code, 'forbidden')
    assert.equal(noGroup.headers['www-authenticate'], undefined)
    // The group without the scopes.
    const noScope = respond(await call('/api/deploy/x', await token({ groups: ['ops'], scope: 'read' })))
    assert.equal(noScope.code, 'insufficient_scope')
  })

  test('a browser session on a scoped route gets 403 insufficient_scope (sessions have no scopes)', async () => {
    const { g } = await scopedSetup()
    const { cookie } = await signIn(g)
    const api = respond(await g.gatehouse.handle(facts('/api/write/items', { headers: { ...API, cookie } })))
    assert.equal(api.status, 403)
    assert.equal(api.code, 'insufficient_scope')
    assert.equal(JSON.parse(api.body).error, 'insufficient_scope')
    assert.match(api.headers['www-authenticate']!, /error="insufficient_scope", scope="write"$/)
    const nav = respond(await g.gatehouse.handle(facts('/api/write/items', { headers: { ...NAV, cookie } })))
    assert.equal(nav.status, 403)
    assert.equal(nav.code, 'insufficient_scope')
    assert.match(nav.headers['content-type']!, /^text\/html/)
    // Elsewhere the session passes, with no scopes header (it has none to tell).
    const ok = allowed(await g.gatehouse.handle(facts('/dashboard', { headers: { ...API, cookie } })))
    assert.equal(ok.upstreamHeaders['x-auth-request-scopes'], undefined)
  })

  test('forward-auth: the same refusal, and 202 with the scopes header', async () => {
    const { g, token } = await scopedSetup()
    const check = async (tok: string) =>
      respond(
        await g.gatehouse.handle(
          facts('/oauth2/auth', {
            headers: {
              authorization: `Bearer ${tok}`,
              'x-forwarded-uri': '/api/write/x',
              'x-forwarded-method': 'POST',
            },
          }),
        ),
      )
    const refused = await check(await token({ scope: 'read' }))
    assert.equal(refused.status, 403)
    assert.equal(refused.code, 'insufficient_scope')
    const ok = await check(await token({ scope: 'write' }))
    assert.equal(ok.status, 202)
    assert.equal(ok.headers['x-auth-request-scopes'], 'write')
  })

  test('a client cannot send its own X-Auth-Request-Scopes through the forward-auth answer', async () => {
    const { g } = await scopedSetup()
    const d = respond(
      await g.gatehouse.handle(
        facts('/oauth2/auth', {
          headers: { 'x-auth-request-scopes': 'write', 'x-forwarded-uri': '/public/x' },
        }),
      ),
    )
    assert.equal(d.status, 202)
    assert.equal(d.headers['x-auth-request-scopes'], '')
  })
})

describe('a scoped route cannot be reached around its rule', () => {
  test('percent-encoded letters in the path are the same path: the rule applies, and the upstream gets it decoded', async () => {
    const { g } = await scopedSetup()
    const { cookie } = await signIn(g)
    for (const path of ['/%61pi/write/x', '/api/wr%69te/x', '/api/%77rite/x?q=%61']) {
      const d = await g.gatehouse.handle(facts(path, { method: 'POST', headers: { ...API, cookie } }))
      assert.equal(d.kind, 'respond', path)
      if (d.kind === 'respond') assert.equal(d.code, 'insufficient_scope', path)
    }
    const open = await g.gatehouse.handle(
      facts('/%64ashboard/%7Euser?x=%61', { headers: { ...API, cookie } }),
    )
    assert.equal(open.kind, 'allow')
    if (open.kind === 'allow')
      assert.equal(open.path, '/dashboard/~user?x=%61', 'path decoded, query untouched')
    // Encoded dots are dot segments: resolved before the policy, like plain ones.
    const dots = await g.gatehouse.handle(
      facts('/public/%2E%2E/api/write/x', { method: 'POST', headers: { ...API, cookie } }),
    )
    assert.equal(dots.kind === 'respond' && dots.code, 'insufficient_scope')
  })

  test('scopes are scope tokens, one by one: an scp element holding two words is two scopes', () => {
    assert.deepEqual(scopesFromClaims({ scp: ['read', 'x write', '', 'bad"quote', 7] }), [
      'read',
      'x',
      'write',
    ])
    assert.deepEqual(scopesFromClaims({ scope: 'read  write' }), ['read', 'write'])
    assert.deepEqual(scopesFromClaims({}), [])
  })

  test('a rule for GET also covers HEAD', () => {
    const match = compileRoutePolicy(
      [
        {
          path: '/api/*',
          methods: ['GET'],
          access: { kind: 'restricted', groups: [], emails: [], scopes: ['read'] },
        },
      ],
      { kind: 'authenticated' },
    )
    assert.equal(match('HEAD', '/api/x').rule, 0)
    assert.equal(match('GET', '/api/x').rule, 0)
    assert.equal(match('POST', '/api/x').rule, -1)
  })
})

describe('scope validation', () => {
  const base = {
    public_url: 'https://app.example.com',
    upstream: 'http://127.0.0.1:3000',
    provider: { issuer: 'https://idp.example.com', client_id: 'gh', client_secret: { env: 'GH_SECRET' } },
    session: { secrets: [{ env: 'GH_SESSION' }] },
    lifetimes: {
      session: { ttl: '12h', max_ttl: '7d' },
      refresh: { ttl: '7d', max_ttl: '30d' },
      api_token: { ttl: '30d', max_ttl: '90d' },
      derived_token: { ttl: '1h', max_ttl: '1d' },
      signing_key: { ttl: '30d', max_ttl: '180d' },
    },
  }
  const problemsFor = (allow: unknown) => {
    try {
      validateConfig({ ...base, routes: [{ path: '/api/*', allow }] })
    } catch (err) {
      return (err as { problems: Array<{ path: string; message: string }> }).problems
    }
    assert.fail('expected a ConfigError')
  }

  test('the config accepts scopes alone or with groups', () => {
    const c = validateConfig({
      ...base,
      routes: [
        { path: '/api/*', allow: { scopes: ['write', 'repo:status'] } },
        { path: '/ops/*', allow: { groups: ['ops'], scopes: ['deploy'] } },
      ],
    })
    assert.deepEqual(c.routes[0]!.allow, { groups: [], emails: [], scopes: ['write', 'repo:status'] })
  })

  test('bad scope tokens are refused with their path', () => {
    const bad = problemsFor({ scopes: ['read', 'two words'] })
    assert.equal(bad.length, 1)
    assert.equal(bad[0]!.path, 'routes[0].allow.scopes[1]')
    assert.match(bad[0]!.message, /expected a scope token \(RFC 6749 §3\.3.*got "two words"/)
    assert.equal(problemsFor({ scopes: ['a"b'] })[0]!.path, 'routes[0].allow.scopes[0]')
    assert.equal(problemsFor({ scopes: ['back\\slash'] })[0]!.path, 'routes[0].allow.scopes[0]')
    assert.equal(problemsFor({ scopes: [''] })[0]!.path, 'routes[0].allow.scopes[0]')
    const empty = problemsFor({ scopes: [] })
    assert.equal(empty[0]!.path, 'routes[0].allow.scopes')
    assert.match(empty[0]!.message, /at least one scope/)
  })

  test('the core refuses a bad scope at construction', () => {
    assert.throws(
      () =>
        compileRoutePolicy([
          { path: '/api/*', access: { kind: 'restricted', groups: [], emails: [], scopes: ['a b'] } },
        ]),
      (err: unknown) => err instanceof TypeError && /scope "a b" is not a scope token/.test(err.message),
    )
  })
})
