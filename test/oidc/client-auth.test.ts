/**
 * Gatehouse 8, item 9: client authentication at the token endpoint (provider.client_auth), against a
 * real oidc-provider whose client is registered with each method: client_secret_basic,
 * client_secret_post, private_key_jwt (with the client's JWKS) and none (a public client with PKCE).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { exportJWK, exportPKCS8, generateKeyPair } from 'jose'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { validateConfig } from '../../src/config/load.ts'
import type { ConfigInput } from '../../src/config/schema.ts'
import type { Logger } from '../../src/core/ports.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'
import { DEMO_USER, signInAt, startTestIdP, type TestIdP, type TestIdPOptions } from '../helpers/test-idp.ts'

const SESSION_SECRET = 'client-auth-session-secret-0123456789abcdef'

interface TokenCall {
  authorization: string | null
  body: URLSearchParams
}

interface Setup {
  idp: TestIdP
  gateway: Gateway
  base: string
  tokenCalls: TokenCall[]
  errors: Record<string, unknown>[]
}

describe('client authentication at the token endpoint', () => {
  let upstream: RecordingUpstream
  const started: Setup[] = []

  before(async () => {
    upstream = await startRecordingUpstream()
  })

  after(async () => {
    for (const s of started) {
      await s.gateway.close()
      await s.idp.close()
    }
    await upstream?.close()
  })

  async function setup(
    idpOptions: Partial<TestIdPOptions>,
    provider: (idp: TestIdP) => Partial<ConfigInput['provider']>,
    env: Record<string, string> = {},
  ): Promise<Setup> {
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const idp = await startTestIdP({ redirectUris: [`${base}/oauth2/callback`], ...idpOptions })
    const tokenCalls: TokenCall[] = []
    const errors: Record<string, unknown>[] = []
    // What the gateway sends to the token endpoint, as the provider receives it.
    const recordingFetch = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
      const request = new Request(input, init)
      if (new URL(request.url).pathname.endsWith('/token')) {
        tokenCalls.push({
          authorization: request.headers.get('authorization'),
          body: new URLSearchParams(await request.clone().text()),
        })
      }
      return fetch(request)
    }) as typeof fetch
    const log: Logger = {
      debug() {},
      info() {},
      warn() {},
      error: (obj) => errors.push(obj as Record<string, unknown>),
    }
    const config = validateConfig({
      public_url: base,
      upstream: upstream.url,
      data_dir: mkdtempSync(join(tmpdir(), 'gh-clientauth-')),
      listen: { host: '127.0.0.1', port },
      provider: { issuer: idp.issuer, client_id: idp.clientId, ...provider(idp) },
      session: { secrets: [{ env: 'SS' }] },
      lifetimes: DEV_LIFETIMES,
      shutdown: { drain: '1s' },
    })
    const gateway = await startGateway(config, {
      baseDir: process.cwd(),
      log,
      admin: false,
      fetch: recordingFetch,
      env: { SS: SESSION_SECRET, CS: idp.clientSecret, ...env },
    })
    const s = { idp, gateway, base, tokenCalls, errors }
    started.push(s)
    return s
  }

  async function signsIn(s: Setup) {
    const { done } = await signInAt(`${s.base}/signed-in`, s.idp.issuer)
    assert.equal(done.response.status, 200)
    assert.equal(upstream.requests.at(-1)!.url, '/signed-in')
    assert.equal(upstream.requests.at(-1)!.headers['x-auth-request-email'], DEMO_USER.email)
    assert.equal(s.tokenCalls.length, 1)
    return s.tokenCalls[0]!
  }

  test('client_secret_basic with a secret holding - . _ ~ and : : accepted, and those are sent as they are', async () => {
    const secret = 'gh-secret.with_unreserved~and:colon-0123456789'
    const s = await setup({ clientSecret: secret }, () => ({
      client_auth: 'client_secret_basic',
      client_secret: { env: 'CS' },
    }))
    const call = await signsIn(s)
    const basic = atob(call.authorization!.replace(/^Basic /, ''))
    // A provider that does not percent-decode (glewlwyd, HCL Domino) compares exactly this.
    assert.equal(basic, `${s.idp.clientId}:${secret}`)
    assert.equal(call.body.get('client_secret'), null)
  })

  test('client_secret_basic still escapes what decoding would change: % and + (and : in the client id)', async () => {
    const secret = 'per%cent+plus/slash=0123456789abcdefghij'
    const s = await setup({ clientSecret: secret, clientId: 'client:with-colon' }, () => ({
      client_auth: 'client_secret_basic',
      client_secret: { env: 'CS' },
    }))
    const call = await signsIn(s)
    assert.equal(
      atob(call.authorization!.replace(/^Basic /, '')),
      'client%3Awith-colon:per%25cent%2Bplus/slash=0123456789abcdefghij',
    )
  })

  test('client_secret_post: the secret goes in the body, no Authorization header', async () => {
    const s = await setup({ clientAuthMethod: 'client_secret_post' }, () => ({
      client_auth: 'client_secret_post',
      client_secret: { env: 'CS' },
    }))
    const call = await signsIn(s)
    assert.equal(call.authorization, null)
    assert.equal(call.body.get('client_id'), s.idp.clientId)
    assert.equal(call.body.get('client_secret'), s.idp.clientSecret)
  })

  test('private_key_jwt with a PEM key from a file, and with a JWK from an environment variable', async () => {
    const rsa = await generateKeyPair('RS256', { extractable: true })
    const pemFile = join(mkdtempSync(join(tmpdir(), 'gh-clientkey-')), 'client-key.pem')
    writeFileSync(pemFile, await exportPKCS8(rsa.privateKey))
    const rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }
    const s1 = await setup({ clientAuthMethod: 'private_key_jwt', clientJwks: { keys: [rsaJwk] } }, () => ({
      client_auth: 'private_key_jwt',
      client_key: { file: pemFile },
    }))
    const call = await signsIn(s1)
    assert.equal(call.authorization, null)
    assert.equal(
      call.body.get('client_assertion_type'),
      'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    )
    assert.ok(call.body.get('client_assertion'))
    assert.equal(call.body.get('client_secret'), null)

    const ec = await generateKeyPair('ES256', { extractable: true })
    const kid = 'ec-1'
    const privateJwk = { ...(await exportJWK(ec.privateKey)), kid, alg: 'ES256' }
    const publicJwk = { ...(await exportJWK(ec.publicKey)), kid, alg: 'ES256', use: 'sig' }
    const s2 = await setup(
      { clientAuthMethod: 'private_key_jwt', clientJwks: { keys: [publicJwk] } },
      () => ({ client_auth: 'private_key_jwt', client_key: { env: 'CLIENT_KEY' } }),
      { CLIENT_KEY: JSON.stringify(privateJwk) },
    )
    const header = JSON.parse(atob((await signsIn(s2)).body.get('client_assertion')!.split('.')[0]!))
    assert.deepEqual({ alg: header.alg, kid: header.kid }, { alg: 'ES256', kid })
  })

  test('none: a public client signs in with PKCE alone; it is the default when no secret is configured', async () => {
    const s = await setup({ clientAuthMethod: 'none' }, () => ({}))
    const call = await signsIn(s)
    assert.equal(call.authorization, null)
    assert.equal(call.body.get('client_id'), s.idp.clientId)
    assert.ok(call.body.get('code_verifier'))
  })

  test('unset with a secret: client_secret_basic, which the provider lists in its discovery document', async () => {
    const s = await setup({}, () => ({ client_secret: { env: 'CS' } }))
    const call = await signsIn(s)
    assert.match(call.authorization ?? '', /^Basic /)
  })

  test('a wrong secret: 500 client_misconfigured, an error line for the operator, no session', async () => {
    const s = await setup({}, () => ({ client_secret: { env: 'WRONG' } }), {
      WRONG: 'not-the-secret-the-provider-knows-0123456789',
    })
    const count = upstream.requests.length
    const { browser, done } = await signInAt(`${s.base}/app`, s.idp.issuer)
    assert.equal(done.response.status, 500)
    const page = await done.response.text()
    assert.match(page, /client_misconfigured/)
    assert.match(page, /not a problem with your account/)
    assert.equal(upstream.requests.length, count, 'the upstream was not reached')
    const line = s.errors.find((e) => e['code'] === 'client_misconfigured')
    assert.equal(line?.['oauthError'], 'invalid_client')
    assert.ok(!JSON.stringify(s.errors).includes('not-the-secret'), 'the secret is not logged')
    // No session: the next request is sent to sign in again.
    const again = await browser.request(`${s.base}/app`, { headers: { accept: 'application/json' } })
    assert.equal(again.status, 401)
    const api = await fetch(`${s.base}/oauth2/callback?state=x`, { headers: { accept: 'application/json' } })
    assert.equal(api.status, 400)
  })
})

test('config: each method needs what it sends, and nothing it would not use', () => {
  const base = {
    public_url: 'http://localhost:8080',
    upstream: 'http://127.0.0.1:3000',
    session: { secrets: [{ env: 'SS' }] },
    lifetimes: DEV_LIFETIMES,
  }
  const problems = (provider: Record<string, unknown>) => {
    try {
      validateConfig({ ...base, provider: { issuer: 'https://idp.example', client_id: 'c', ...provider } })
      return []
    } catch (err) {
      return (err as { problems: Array<{ path: string; message: string }> }).problems.map(
        (p) => `${p.path}: ${p.message}`,
      )
    }
  }
  assert.deepEqual(problems({ client_auth: 'client_secret_post' }), [
    'provider.client_secret: required by client_auth client_secret_post, got nothing',
  ])
  assert.deepEqual(problems({ client_auth: 'private_key_jwt' }), [
    'provider.client_key: required by client_auth private_key_jwt, got nothing',
  ])
  assert.match(problems({ client_auth: 'none', client_secret: { env: 'CS' } })[0]!, /public client/)
  assert.match(
    problems({ client_key: { file: 'k.pem' }, client_secret: { env: 'CS' } })[0]!,
    /private_key_jwt/,
  )
  assert.deepEqual(problems({ client_auth: 'private_key_jwt', client_key: { env: 'K', alg: 'ES256' } }), [])
  assert.deepEqual(problems({}), [], 'no secret: a public client')
})
