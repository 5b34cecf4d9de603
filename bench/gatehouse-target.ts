/**
 * The Gatehouse target of `npm run bench`: authenticated GETs with a valid session cookie, minted here
 * with the same secret the child gateway uses.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sessionCookie } from '../test/helpers/session.ts'
import { type BenchTarget, startChild } from './run.ts'

const here = fileURLToPath(new URL('.', import.meta.url))

export const target: BenchTarget = {
  name: 'gatehouse',
  async start(ctx) {
    const secret = randomBytes(32).toString('base64url')
    const child = await startChild(`${here}gatehouse-child.ts`, [ctx.originUrl], {
      GATEHOUSE_BENCH_SECRET: secret,
    })
    const cookie = await sessionCookie(secret, {
      sid: 'bench-session',
      identity: {
        sub: 'bench-user',
        user: 'bench-user',
        email: 'bench@example.com',
        groups: ['staff'],
        preferredUsername: 'bench',
      },
      // Realistic sizes: a provider's JWT access token, an opaque refresh token, an ID token.
      accessToken: randomBytes(600).toString('base64url'),
      refreshToken: randomBytes(32).toString('base64url'),
      idToken: randomBytes(500).toString('base64url'),
    })
    // Sanity check before measuring: the cookie must be accepted (200 from the origin, not a 302/401).
    const probe = await fetch(`${child.url}/`, { headers: { cookie }, redirect: 'manual' })
    if (probe.status !== 200) throw new Error(`gatehouse target refused the bench session: ${probe.status}`)
    await probe.arrayBuffer()
    return { url: `${child.url}/`, headers: { cookie }, pid: child.pid, stop: child.stop }
  },
}

/** Gatehouse with `Authorization: Bearer gth_…` (its own API token) instead of a session cookie. */
export const apiTokenTarget: BenchTarget = {
  name: 'gatehouse-api-token',
  async start(ctx) {
    const secret = randomBytes(32).toString('base64url')
    const tokenFile = join(mkdtempSync(join(tmpdir(), 'gh-bench-token-')), 'token')
    const child = await startChild(`${here}gatehouse-child.ts`, [ctx.originUrl], {
      GATEHOUSE_BENCH_SECRET: secret,
      BENCH_TOKEN_FILE: tokenFile,
    })
    const token = readFileSync(tokenFile, 'utf8')
    const probe = await fetch(`${child.url}/`, { headers: { authorization: `Bearer ${token}` } })
    if (probe.status !== 200) throw new Error(`gatehouse refused the bench API token: ${probe.status}`)
    await probe.arrayBuffer()
    return {
      url: `${child.url}/`,
      headers: { authorization: `Bearer ${token}` },
      pid: child.pid,
      stop: child.stop,
    }
  },
}

/** The session target with config `apps`: three apps, the load on the second (Host b.localhost). */
export const appsTarget: BenchTarget = {
  name: 'gatehouse-apps',
  async start(ctx) {
    const secret = randomBytes(32).toString('base64url')
    const child = await startChild(`${here}gatehouse-child.ts`, [ctx.originUrl], {
      GATEHOUSE_BENCH_SECRET: secret,
      BENCH_APPS: '1',
    })
    const cookie = await sessionCookie(secret, {
      sid: 'bench-session',
      identity: { sub: 'bench-user', user: 'bench-user', email: 'bench@example.com', groups: ['staff'] },
      accessToken: randomBytes(600).toString('base64url'),
      refreshToken: randomBytes(32).toString('base64url'),
      idToken: randomBytes(500).toString('base64url'),
    })
    // `Host` as written: wrk replaces its own Host only for that exact spelling (a second one is a 400).
    const headers = { cookie, Host: 'b.localhost' }
    const status = await new Promise<number | undefined>((resolve, reject) => {
      get(`${child.url}/`, { headers }, (res) => {
        res.resume()
        resolve(res.statusCode)
      }).on('error', reject)
    })
    if (status !== 200) throw new Error(`gatehouse-apps target refused the bench session: ${status}`)
    return { url: `${child.url}/`, headers, pid: child.pid, stop: child.stop }
  },
}

export const targets: BenchTarget[] = [target, apiTokenTarget, appsTarget]
