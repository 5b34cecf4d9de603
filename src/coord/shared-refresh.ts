import { createHash, randomBytes } from 'node:crypto'
import { CompactEncrypt, compactDecrypt } from 'jose'
import { ProviderRejectedError, ProviderUnavailableError } from '../core/errors.ts'
import type { Logger, TokenResult } from '../core/ports.ts'
import type { RedisCoordinator } from './redis-coordinator.ts'

export interface SharedRefreshOptions {
  redis: RedisCoordinator
  log: Logger
  /** How long the winner holds the lock at most (it is released as soon as it is done). Default 15000 ms. */
  lockMs?: number
  /** How long the result stays for the losers (and for requests still carrying the old cookie). Default 60000 ms. */
  resultMs?: number
  /** How long a loser waits for the winner before giving up with ProviderUnavailableError. Default 10000 ms. */
  waitMs?: number
  /** How often a loser looks for the result. Default 25 ms. */
  pollMs?: number
}

type Stored = { ok: TokenResult } | { rejected: string; message: string }

// Deletes the lock only when it is still ours (it may have expired and been taken by another).
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`

/**
 * Refresh single-flight across instances. The per-process single-flight (core) already folds the
 * requests of one session in one process; this folds the processes: the first instance to take a Redis
 * lock (`SET NX PX`, keyed by a hash of the refresh token) calls the provider, and leaves the result in
 * Redis for a minute, encrypted (a jose JWE, dir + A256GCM) with a key derived from the refresh token itself, so only
 * a holder of that session's cookie can read it. The others wait for it and reuse it, so the provider
 * sees one refresh and a rotating refresh token is never presented twice. A refusal (`invalid_grant`) is
 * shared the same way; a provider outage is not (the next instance tries, behind the breaker).
 *
 * Lock and result share the hash tag `{rf:<hash>}`, so they sit in one Redis Cluster slot. Redis down:
 * each instance refreshes on its own (the core's single-flight still holds per process).
 */
export function createSharedRefresh(
  refresh: (refreshToken: string) => Promise<TokenResult>,
  options: SharedRefreshOptions,
): (refreshToken: string) => Promise<TokenResult> {
  const { redis, log } = options
  const lockMs = options.lockMs ?? 15_000
  const resultMs = options.resultMs ?? 60_000
  const waitMs = options.waitMs ?? 10_000
  const pollMs = options.pollMs ?? 25

  return async function sharedRefresh(refreshToken) {
    if (!redis.isUp()) {
      redis.fellBack('refresh_lock')
      return refresh(refreshToken)
    }
    const id = createHash('sha256').update(`gatehouse refresh lock\0${refreshToken}`).digest('base64url')
    const lockKey = `${redis.prefix}{rf:${id}}:lock`
    const resultKey = `${redis.prefix}{rf:${id}}:result`
    const key = await resultKeyOf(refreshToken)
    const deadline = Date.now() + waitMs
    for (;;) {
      let stored: string | null
      let won: boolean
      const mine = randomBytes(12).toString('base64url')
      try {
        stored = await redis.client.get(resultKey)
        won = stored === null && (await redis.client.set(lockKey, mine, 'PX', lockMs, 'NX')) === 'OK'
        // The winner may have left its result and freed the lock between our GET and our SET: look again
        // now that the lock is ours, or we would present a refresh token that was just rotated.
        if (won) stored = await redis.client.get(resultKey)
      } catch (err) {
        redis.fellBack('refresh_lock')
        log.debug({ event: 'refresh_lock_unavailable', err: (err as Error).message }, 'refreshing locally')
        return refresh(refreshToken)
      }
      if (stored !== null) {
        const outcome = await open(key, stored).catch(() => undefined)
        if (outcome !== undefined) {
          if (won) await redis.client.eval(RELEASE, 1, lockKey, mine).catch(() => {})
          if ('ok' in outcome) return outcome.ok
          throw new ProviderRejectedError(outcome.rejected, outcome.message)
        }
        // Unreadable (not ours, or damaged): refresh as if it were not there.
        won = true
      }
      if (won) {
        let outcome: Stored
        try {
          outcome = { ok: await refresh(refreshToken) }
        } catch (err) {
          if (err instanceof ProviderRejectedError) {
            outcome = { rejected: err.oauthError, message: err.message }
          } else {
            await redis.client.eval(RELEASE, 1, lockKey, mine).catch(() => {})
            throw err
          }
        }
        try {
          await redis.client.set(resultKey, await seal(key, outcome), 'PX', resultMs)
        } catch {
          // The others will refresh themselves once the lock is gone: at worst one more provider call.
        }
        await redis.client.eval(RELEASE, 1, lockKey, mine).catch(() => {})
        if ('ok' in outcome) return outcome.ok
        throw new ProviderRejectedError(outcome.rejected, outcome.message)
      }
      if (Date.now() >= deadline) {
        throw new ProviderUnavailableError('another instance is refreshing this session and has not finished')
      }
      await new Promise((r) => setTimeout(r, pollMs))
    }
  }
}

/** The result's key: HKDF over the refresh token, so only a holder of that token can read the result. */
async function resultKeyOf(refreshToken: string): Promise<Uint8Array> {
  const ikm = await crypto.subtle.importKey('raw', new TextEncoder().encode(refreshToken), 'HKDF', false, [
    'deriveBits',
  ])
  const bits = await crypto.subtle.deriveBits(
    {
      name: 'HKDF',
      hash: 'SHA-256',
      salt: new TextEncoder().encode('gatehouse'),
      info: new TextEncoder().encode('shared refresh result v1'),
    },
    ikm,
    256,
  )
  return new Uint8Array(bits)
}

/** A compact JWE (dir, A256GCM) with jose. */
function seal(key: Uint8Array, value: Stored): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(JSON.stringify(value)))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
    .encrypt(key)
}

async function open(key: Uint8Array, text: string): Promise<Stored> {
  const { plaintext } = await compactDecrypt(text, key, {
    keyManagementAlgorithms: ['dir'],
    contentEncryptionAlgorithms: ['A256GCM'],
  })
  return JSON.parse(new TextDecoder().decode(plaintext)) as Stored
}
