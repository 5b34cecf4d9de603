import { parseArgs } from 'node:util'
import { parseDurationSeconds } from '../config/duration.ts'
import type { AuditStore } from '../store/ports.ts'
import { openState } from './state.ts'

const USAGE = `Usage:
  gatehouse audit [--since 1h] [--limit 1000] [--json]
Security events (sign-in, sign-out, token issue/revoke, key rotation, rate-limit trips), oldest first.
Options: --config FILE, or --data DIR in dev (default .gatehouse)
`

const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z')

export async function run(argv: string[]): Promise<number> {
  let values: { config?: string; data?: string; since: string; limit: string; json: boolean; help?: boolean }
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        data: { type: 'string' },
        since: { type: 'string', default: '24h' },
        limit: { type: 'string', default: '1000' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }) as { values: typeof values })
  } catch (err) {
    process.stderr.write(`gatehouse audit: ${(err as Error).message}\n${USAGE}`)
    return 1
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const sinceSeconds = parseDurationSeconds(values.since)
  if (sinceSeconds === undefined) {
    process.stderr.write(
      `gatehouse audit: --since expected a duration such as 90m, 12h or 7d, got "${values.since}"\n`,
    )
    return 1
  }
  const limit = Number(values.limit)
  if (!Number.isInteger(limit) || limit < 1) {
    process.stderr.write(`gatehouse audit: --limit expected a positive whole number, got "${values.limit}"\n`)
    return 1
  }
  const state = await openState(values)
  try {
    const store = state.store as Partial<AuditStore>
    if (store.listAudit === undefined) {
      process.stderr.write('gatehouse audit: this store keeps no audit log\n')
      return 1
    }
    const since = Math.floor(Date.now() / 1000) - sinceSeconds
    const events = await store.listAudit({ since, limit })
    if (values.json) {
      process.stdout.write(`${JSON.stringify(events, null, 2)}\n`)
      return 0
    }
    for (const e of events) {
      const detail = Object.entries(e.detail)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')
      process.stdout.write(`${iso(e.at)}  ${e.type.padEnd(18)} ${(e.subject ?? '-').padEnd(24)} ${detail}\n`)
    }
    if (events.length === 0) process.stdout.write(`(no events since ${iso(since)})\n`)
    return 0
  } finally {
    await state.close()
  }
}
