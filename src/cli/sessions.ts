import { parseArgs } from 'node:util'
import type { SessionRevocation } from '../core/ports.ts'
import { openState } from './state.ts'

const USAGE = `Usage:
  gatehouse sessions revoke SID          sign out one browser session (its id is in the sign-in log line)
  gatehouse sessions revoke --user SUB   sign a user out everywhere: every session signed in until now
      [--provider NAME]                  with a providers list: only the user SUB of that provider
                                         (without it, SUB at every provider)
  gatehouse sessions list-revoked [--json]
Running gateways refuse a revoked session within seconds (at once with store.redis).
Options: --config FILE, or --data DIR in dev (default .gatehouse)
`

const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z')

export async function run(argv: string[]): Promise<number> {
  let parsed: {
    values: {
      config?: string
      data?: string
      user?: string
      provider?: string
      json: boolean
      help?: boolean
    }
    positionals: string[]
  }
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        data: { type: 'string' },
        user: { type: 'string' },
        provider: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }) as typeof parsed
  } catch (err) {
    process.stderr.write(`gatehouse sessions: ${(err as Error).message}\n${USAGE}`)
    return 1
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const [action, sid, ...extra] = positionals
  const revokeArgsOk =
    action === 'revoke' && extra.length === 0 && (sid === undefined) !== (values.user === undefined)
  const listOk = action === 'list-revoked' && sid === undefined && values.user === undefined
  if (!(revokeArgsOk || listOk) || (values.provider !== undefined && values.user === undefined)) {
    process.stderr.write(USAGE)
    return 1
  }
  const state = await openState(values)
  try {
    if (action === 'list-revoked') {
      const list = await state.store.listSessionRevocations(Math.floor(Date.now() / 1000))
      if (values.json) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`)
        return 0
      }
      process.stdout.write(`${'kind'.padEnd(5)} ${'revoked'.padEnd(21)} ${'until'.padEnd(21)} what\n`)
      for (const r of list) {
        process.stdout.write(
          `${r.kind.padEnd(5)} ${iso(r.revokedAt).padEnd(21)} ${iso(r.expiresAt).padEnd(21)} ${r.value}\n`,
        )
      }
      if (list.length === 0) process.stdout.write('(no revoked sessions)\n')
      return 0
    }
    // With a providers list, a user is a provider's (`<name>:<sub>`, as sessions are checked); a bare sub
    // covers that sub at every provider.
    const provider = values.provider
    if (provider !== undefined && !state.config.providers?.some((p) => p.name === provider)) {
      const names = state.config.providers?.map((p) => p.name).join(', ')
      process.stderr.write(
        `gatehouse sessions: --provider ${provider} is not in the config's providers${names ? ` (${names})` : ' (it has none)'}\n`,
      )
      return 1
    }
    const entry =
      sid !== undefined
        ? { kind: 'sid' as const, value: sid }
        : {
            kind: 'sub' as const,
            value: provider === undefined ? values.user! : `${provider}:${values.user!}`,
          }
    let stored: SessionRevocation[]
    try {
      stored = await state.sessions.revoke([entry])
    } catch (err) {
      if (err instanceof TypeError) {
        process.stderr.write(
          `gatehouse sessions: ${entry.kind === 'sid' ? 'SID' : '--user'} ${err.message.replace(/^session revocation: \w+ /, '')}\n`,
        )
        return 1
      }
      throw err
    }
    const r = stored[0]!
    state.log.info(
      entry.kind === 'sid'
        ? { event: 'session_revoked', kind: 'sid', sid: r.value, reason: 'cli' }
        : { event: 'session_revoked', kind: 'sub', sub: r.value, reason: 'cli' },
      'sessions revoked',
    )
    process.stdout.write(
      entry.kind === 'sid'
        ? `revoked session ${r.value} (refused until ${iso(r.expiresAt)})\n`
        : `revoked every session of ${r.value} signed in until ${iso(r.revokedAt)} (refused until ${iso(r.expiresAt)})\n`,
    )
    return 0
  } finally {
    await state.close()
  }
}
