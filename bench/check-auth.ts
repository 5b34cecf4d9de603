/**
 * In-process microbenchmark of check_auth for a valid session: cold (first sight of each cookie:
 * JWE decryption) and warm (the same cookie again: cache hit), next to a baseline of the bare
 * cookie lookup measured in the same run. Prints ops/s and ratios. Not a test.
 *
 *   node bench/check-auth.ts
 */
import { generateKeyPair } from 'jose'
import { createAssertionSigner } from '../src/core/assertion.ts'
import { createFrozenClock } from '../src/core/clock.ts'
import { readCookie } from '../src/core/cookies.ts'
import type { RequestFacts } from '../src/core/decisions.ts'
import { createGatehouse, type GatehouseDeps, type GatehouseOptions } from '../src/core/gatehouse.ts'
import { createMemoryOneTimeStore } from '../src/core/one-time-store.ts'
import { silentLogger } from '../src/core/ports.ts'
import { createSessionCodec, type Session } from '../src/core/session-codec.ts'

const clock = createFrozenClock(Date.now())
const now = Math.floor(clock.now() / 1000)
const codec = await createSessionCodec({
  secrets: ['bench-secret-bench-secret-bench-secret-0123'],
  cookieName: '__Host-gatehouse',
  secure: true,
  clock,
  cacheEntries: 200_000,
})
const unused = async () => {
  throw new Error('the provider is not called in this benchmark')
}
const deps: GatehouseDeps = {
  clock,
  codec,
  oneTime: createMemoryOneTimeStore(clock),
  log: silentLogger,
  oidc: {
    authorizationUrl: unused,
    exchangeCode: unused,
    refresh: unused,
    endSessionUrl: unused,
    revoke: unused,
  },
}
const options: GatehouseOptions = {
  publicUrl: 'https://app.example.com',
  routes: [
    { path: '/public/*', access: { kind: 'anonymous' } },
    { path: '/admin/*', access: { kind: 'restricted', groups: ['admins'], emails: [] } },
  ],
  session: { ttlSeconds: 43_200, maxTtlSeconds: 604_800, refreshBeforeSeconds: 600 },
  signInTtlSeconds: 600,
  mapping: { userClaim: 'sub', groupsClaim: 'groups' },
  passAccessToken: false,
}
const gatehouse = createGatehouse(options, deps)
// The same with identity assertions (X-Gatehouse-Assertion) on: signed once per identity per half-lifetime.
const { privateKey } = await generateKeyPair('EdDSA')
const asserting = createGatehouse(
  { ...options, assertion: { audience: 'https://app.example.com' } },
  {
    ...deps,
    assertionSigner: createAssertionSigner({
      issuer: 'https://app.example.com',
      ttlSeconds: 60,
      clock,
      signingKey: () => ({ kid: 'bench', alg: 'EdDSA', key: privateKey }),
    }),
  },
)

// The same with a providers list of two (docs/providers.md): sessions name their provider.
const listed = createGatehouse(options, {
  ...deps,
  providers: ['corp', 'contractors'].map((name) => ({
    name,
    title: name,
    oidc: deps.oidc,
    issuer: `https://${name}.example`,
    outageGraceSeconds: 3600,
  })),
})

function session(i: number): Session {
  return {
    sid: `sid-${i}`,
    identity: {
      sub: `user-${i}`,
      user: `user-${i}`,
      email: `u${i}@example.com`,
      groups: ['staff'],
      preferredUsername: `u${i}`,
    },
    signedInAt: now,
    expiresAt: now + 43_200,
    maxExpiresAt: now + 604_800,
    accessToken: 'a'.repeat(600),
    accessTokenExpiresAt: now + 3600,
    refreshToken: 'r'.repeat(40),
    idToken: 'i'.repeat(300),
  }
}

async function cookieFor(i: number, provider?: string): Promise<string> {
  const s = session(i)
  const set = await codec.write(provider === undefined ? s : { ...s, identity: { ...s.identity, provider } })
  codec.forget(set[0]!.split(';')[0]!.split('=').slice(1).join('='))
  // A realistic header: the app's own cookies around ours.
  return `_ga=GA1.2.123456789.1700000000; theme=dark; ${set[0]!.split(';')[0]}; lang=en-GB`
}

function facts(cookie: string): RequestFacts {
  const headers: Record<string, string> = { cookie, accept: 'text/html', 'sec-fetch-mode': 'navigate' }
  return { method: 'GET', url: '/dashboard?tab=2', header: (n) => headers[n], clientAddress: '127.0.0.1' }
}

async function measure(name: string, n: number, fn: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < Math.min(n, 1000); i++) await fn(i) // warm-up
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await fn(i)
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  const ops = n / seconds
  console.log(`${name.padEnd(44)} ${Math.round(ops).toLocaleString('en').padStart(12)} ops/s`)
  return ops
}

const COLD = Number(process.env['BENCH_COLD'] ?? 20_000)
const WARM = Number(process.env['BENCH_WARM'] ?? 1_000_000)
const coldCookies = await Promise.all(Array.from({ length: COLD + 1000 }, (_, i) => cookieFor(i)))
const warmFacts = facts(await cookieFor(-1))
const decided = await gatehouse.handle(warmFacts)
if (decided.kind !== 'allow') throw new Error(`benchmark session not accepted: ${JSON.stringify(decided)}`)
const listedFacts = facts(await cookieFor(-2, 'contractors'))
if ((await listed.handle(listedFacts)).kind !== 'allow') throw new Error('listed session not accepted')

console.log(`check_auth, one core, Node ${process.version}`)
const baseline = await measure('baseline: read the cookie from the header', WARM, () =>
  readCookie(warmFacts.header('cookie'), '__Host-gatehouse'),
)
const warm = await measure('check_auth warm (cache hit)', WARM, () => gatehouse.handle(warmFacts))
const assertedWarm = await measure('check_auth warm, identity assertion on', WARM, () =>
  asserting.handle(warmFacts),
)
const listedWarm = await measure('check_auth warm, two providers', WARM, () => listed.handle(listedFacts))
const cold = await measure('check_auth cold (first sight: JWE decrypt)', COLD, (i) =>
  gatehouse.handle(facts(coldCookies[i]!)),
)
console.log(
  `\nwarm / baseline ${(warm / baseline).toFixed(3)}   cold / warm ${(cold / warm).toFixed(4)}   assertion on / warm ${(assertedWarm / warm).toFixed(3)}   two providers / warm ${(listedWarm / warm).toFixed(3)}`,
)
