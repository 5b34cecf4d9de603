import { systemClock } from '../../src/core/clock.ts'
import { createSessionCodec, type Session } from '../../src/core/session-codec.ts'

/**
 * A session cookie (`name=value`, as a client sends it) sealed with `secret`, valid for an hour from
 * now on the real clock: for tests and benchmarks that need a signed-in client without a sign-in.
 */
export async function sessionCookie(secret: string, session: Partial<Session> = {}): Promise<string> {
  const codec = await createSessionCodec({
    secrets: [secret],
    cookieName: 'gatehouse',
    secure: false,
    clock: systemClock,
  })
  const now = Math.floor(Date.now() / 1000)
  const [set] = await codec.write({
    sid: 'test-session',
    identity: { sub: 'good', user: 'good', groups: [] },
    signedInAt: now,
    expiresAt: now + 3600,
    maxExpiresAt: now + 7200,
    accessToken: 'at',
    accessTokenExpiresAt: now + 3600,
    refreshToken: 'rt',
    ...session,
  })
  return set!.split(';')[0]!
}
