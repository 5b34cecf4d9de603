/**
 * How provider answers become the core's three error kinds, against a small HTTP server that answers
 * like a provider would (discovery document, token endpoint), and Cognito's logout URL shape.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { after, before, test } from 'node:test'
import { systemClock } from '../../src/core/clock.ts'
import {
  ProviderRejectedError,
  ProviderResponseError,
  ProviderUnavailableError,
} from '../../src/core/errors.ts'
import { createOIDCClient } from '../../src/oidc/client.ts'

let tokenAnswer: { status: number; body: string; contentType?: string } = { status: 200, body: '{}' }
let hang = false
const server = createServer((req, res) => {
  const issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  if (req.url === '/.well-known/openid-configuration') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        issuer,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        end_session_endpoint: `${issuer}/logout`,
      }),
    )
    return
  }
  if (req.url === '/token') {
    req.resume()
    if (hang) return
    res.writeHead(tokenAnswer.status, { 'content-type': tokenAnswer.contentType ?? 'application/json' })
    res.end(tokenAnswer.body)
    return
  }
  res.writeHead(404).end()
})
let issuer = ''
before(async () => {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`
})
after(() => {
  server.closeAllConnections()
  server.close()
})

function client(extra: Partial<Parameters<typeof createOIDCClient>[0]> = {}) {
  return createOIDCClient({
    issuer,
    clientId: 'gh',
    clientSecret: 's',
    redirectUri: 'http://localhost/oauth2/callback',
    scopes: ['openid'],
    preset: 'generic',
    algorithms: ['RS256'],
    timeoutMs: 300,
    clock: systemClock,
    ...extra,
  })
}

test('refresh: invalid_grant is a refusal, 5xx and timeouts are unavailability, garbage is a bad answer', async () => {
  const c = client()
  tokenAnswer = {
    status: 400,
    body: JSON.stringify({ error: 'invalid_grant', error_description: 'revoked' }),
  }
  await assert.rejects(
    c.refresh('rt'),
    (e: unknown) => e instanceof ProviderRejectedError && e.oauthError === 'invalid_grant',
  )
  tokenAnswer = { status: 503, body: '<html>busy</html>', contentType: 'text/html' }
  await assert.rejects(c.refresh('rt'), ProviderUnavailableError)
  tokenAnswer = { status: 200, body: 'not json', contentType: 'text/plain' }
  await assert.rejects(c.refresh('rt'), ProviderResponseError)
  hang = true
  try {
    await assert.rejects(c.refresh('rt'), ProviderUnavailableError)
  } finally {
    hang = false
  }
})

test('a provider that cannot be reached is unavailable, for discovery and for whatever needs it', async () => {
  const c = client({ issuer: 'http://127.0.0.1:9/idp' })
  await assert.rejects(c.metadata(), ProviderUnavailableError)
  await assert.rejects(
    c.authorizationUrl({ state: 's', nonce: 'n', codeChallenge: 'c' }),
    ProviderUnavailableError,
  )
})

test('authorization URL: code flow, PKCE S256, state and nonce, exact redirect URI', async () => {
  const url = new URL(await client().authorizationUrl({ state: 'st', nonce: 'no', codeChallenge: 'ch' }))
  assert.equal(url.origin + url.pathname, `${issuer}/auth`)
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    client_id: 'gh',
    redirect_uri: 'http://localhost/oauth2/callback',
    response_type: 'code',
    scope: 'openid',
    state: 'st',
    nonce: 'no',
    code_challenge: 'ch',
    code_challenge_method: 'S256',
  })
})

test("end-session: the provider's endpoint with client_id and logout_hint, no ID token; Cognito's /logout?client_id=&logout_uri=", async () => {
  const generic = new URL(
    (await client().endSessionUrl({
      idTokenHint: 'idt',
      logoutHint: 'user-1',
      postLogoutRedirectUri: 'https://app/',
    }))!,
  )
  assert.equal(generic.pathname, '/logout')
  assert.deepEqual([...generic.searchParams.keys()].sort(), [
    'client_id',
    'logout_hint',
    'post_logout_redirect_uri',
  ])
  assert.equal(generic.searchParams.get('client_id'), 'gh')
  assert.equal(generic.searchParams.get('logout_hint'), 'user-1')
  assert.equal(generic.searchParams.get('post_logout_redirect_uri'), 'https://app/')
  // Only for a provider configured to need it (provider.logout_id_token_hint: true).
  const withToken = new URL(
    (await client({ logoutIdTokenHint: true }).endSessionUrl({
      idTokenHint: 'idt',
      logoutHint: 'user-1',
      postLogoutRedirectUri: 'https://app/',
    }))!,
  )
  assert.equal(withToken.searchParams.get('id_token_hint'), 'idt')
  assert.equal(withToken.searchParams.get('client_id'), 'gh')
  const cognito = new URL(
    (await client({ preset: 'cognito', endSessionUrl: 'https://auth.example.com/logout' }).endSessionUrl({
      idTokenHint: 'idt',
      postLogoutRedirectUri: 'https://app/',
    }))!,
  )
  assert.equal(cognito.href, 'https://auth.example.com/logout?client_id=gh&logout_uri=https%3A%2F%2Fapp%2F')
})

test('an http issuer is refused unless it is on loopback', () => {
  assert.throws(() => client({ issuer: 'http://idp.example.com' }), TypeError)
})
