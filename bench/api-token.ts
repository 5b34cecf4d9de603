/**
 * In-process API-token verification, next to jose's raw `jwtVerify` of the same token with the same
 * key in the same run: cold (each token seen for the first time: signature check) and warm (cache
 * hit). Not a test.
 *
 *   node bench/api-token.ts
 */
import { jwtVerify } from 'jose'
import { createFrozenClock } from '../src/core/clock.ts'
import { silentLogger } from '../src/core/ports.ts'
import { createKeyRing } from '../src/keys/key-ring.ts'
import { createMemoryStore } from '../src/store/memory-store.ts'
import { createTokenService, TOKEN_PREFIX } from '../src/tokens/token-service.ts'

const clock = createFrozenClock(Date.now())
const store = createMemoryStore()
const algorithm = (process.env['BENCH_ALG'] as 'EdDSA' | 'ES256' | undefined) ?? 'EdDSA'
const keyRing = await createKeyRing({
  store,
  clock,
  log: silentLogger,
  algorithm,
  encryptionSecrets: ['bench-at-rest-secret-0123456789abcdefghij'],
  signingPeriodSeconds: 30 * 86_400,
  publishAheadSeconds: 86_400,
  retentionSeconds: 90 * 86_400,
})
const issuer = 'https://app.example.com'
const tokens = createTokenService({
  store,
  keyRing,
  clock,
  log: silentLogger,
  issuer,
  audience: issuer,
  lifetimes: {
    apiToken: { ttlSeconds: 30 * 86_400, maxTtlSeconds: 90 * 86_400 },
    derivedToken: { ttlSeconds: 3600, maxTtlSeconds: 86_400 },
  },
  cacheEntries: 100_000,
})

const COLD = Number(process.env['BENCH_COLD'] ?? 3000)
const WARM = Number(process.env['BENCH_WARM'] ?? 500_000)
const issued: string[] = []
for (let i = 0; i < COLD; i++)
  issued.push((await tokens.issue({ subject: `bot-${i}`, scopes: ['read'] })).token)
const { kid } = keyRing.signingKey()
const publicKey = keyRing.verificationKey(kid)!.key

async function measure(name: string, n: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await fn(i)
  const ops = n / (Number(process.hrtime.bigint() - start) / 1e9)
  console.log(`${name.padEnd(48)} ${Math.round(ops).toLocaleString('en').padStart(12)} ops/s`)
  return ops
}

console.log(`API token verification (${algorithm}), one at a time, Node ${process.version}`)
const raw = await measure('baseline: jose jwtVerify of the same tokens', COLD, (i) =>
  jwtVerify(issued[i]!.slice(TOKEN_PREFIX.length), publicKey, {
    issuer,
    audience: issuer,
    algorithms: [algorithm],
  }),
)
const cold = await measure('tokens.verify cold (first sight)', COLD, async (i) => {
  const r = await tokens.verify(issued[i]!)
  if (!r.ok) throw new Error(r.reason)
})
const warm = await measure('tokens.verify warm (cache hit)', WARM, (i) => tokens.verify(issued[i % COLD]!))
console.log(`\ncold / jose ${(cold / raw).toFixed(2)}   warm / jose ${(warm / raw).toFixed(1)}`)
