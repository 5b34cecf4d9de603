import { parseArgs } from 'node:util'
import { parseDurationSeconds } from '../config/duration.ts'
import { GatehouseError } from '../core/errors.ts'
import { openState } from './state.ts'

const USAGE = `Usage:
  gatehouse tokens issue --subject S [--scope a,b] [--ttl 30d] [--parent JTI] [--description TEXT] [--json]
  gatehouse tokens list [--all] [--json]
  gatehouse tokens revoke JTI [--cascade]
  gatehouse tokens inspect TOKEN
Options: --config FILE, or --data DIR in dev (default .gatehouse)
`

const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z')

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      data: { type: 'string' },
      subject: { type: 'string' },
      scope: { type: 'string' },
      ttl: { type: 'string' },
      parent: { type: 'string' },
      description: { type: 'string' },
      cascade: { type: 'boolean', default: false },
      all: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  })
  const [action, arg] = positionals
  if (!['issue', 'list', 'revoke', 'inspect'].includes(action ?? '')) {
    process.stderr.write(USAGE)
    return 1
  }
  let ttlSeconds: number | undefined
  if (values.ttl !== undefined) {
    ttlSeconds = parseDurationSeconds(values.ttl)
    if (ttlSeconds === undefined || ttlSeconds === 0) {
      process.stderr.write(
        `gatehouse tokens: --ttl expected a duration such as 1h or 30d, got "${values.ttl}"\n`,
      )
      return 1
    }
  }
  const state = await openState(values)
  try {
    switch (action) {
      case 'issue': {
        if (values.subject === undefined) {
          process.stderr.write('gatehouse tokens issue: --subject is required\n')
          return 1
        }
        const issued = await state.tokens.issue({
          subject: values.subject,
          scopes: values.scope
            ?.split(',')
            .map((s) => s.trim())
            .filter(Boolean),
          ttlSeconds,
          parentJti: values.parent,
          description: values.description,
        })
        if (values.json) {
          process.stdout.write(
            `${JSON.stringify({ token: issued.token, ...issued.record, capped: issued.capped }, null, 2)}\n`,
          )
        } else {
          process.stdout.write(`${issued.token}\n`)
          process.stderr.write(
            `jti ${issued.record.jti}, expires ${iso(issued.record.expiresAt)} (shown once; only its claims are stored)\n`,
          )
        }
        if (issued.capped !== undefined) {
          const why =
            issued.capped.by === 'parent'
              ? `its parent ${issued.capped.parentJti} expires then`
              : 'the api/derived token max_ttl'
          process.stderr.write(
            `capped: asked until ${iso(issued.capped.requestedExpiresAt)}, issued until ${iso(issued.capped.grantedExpiresAt)} because ${why}\n`,
          )
        }
        return 0
      }
      case 'list': {
        const list = await state.tokens.list(values.all)
        if (values.json) {
          process.stdout.write(`${JSON.stringify(list, null, 2)}\n`)
          return 0
        }
        process.stdout.write(
          `${'jti'.padEnd(24)} ${'subject'.padEnd(20)} ${'expires'.padEnd(21)} ${'status'.padEnd(8)} parent\n`,
        )
        const now = Date.now() / 1000
        for (const t of list) {
          const status = t.revokedAt !== undefined ? 'revoked' : t.expiresAt <= now ? 'expired' : 'live'
          process.stdout.write(
            `${t.jti.padEnd(24)} ${t.subject.padEnd(20)} ${iso(t.expiresAt).padEnd(21)} ${status.padEnd(8)} ${t.parentJti ?? '-'}\n`,
          )
        }
        if (list.length === 0) process.stdout.write('(no tokens)\n')
        return 0
      }
      case 'revoke': {
        if (arg === undefined) {
          process.stderr.write(USAGE)
          return 1
        }
        if (values.cascade) {
          const n = await state.tokens.countDescendants(arg)
          process.stdout.write(`revoking ${arg} and ${n} descendant(s)\n`)
        }
        const { revoked } = await state.tokens.revoke(arg, values.cascade)
        process.stdout.write(`revoked ${revoked.length}: ${revoked.join(', ')}\n`)
        return 0
      }
      default: {
        if (arg === undefined) {
          process.stderr.write(USAGE)
          return 1
        }
        const r = await state.tokens.inspect(arg)
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
        return r.status === 'valid' ? 0 : 1
      }
    }
  } catch (err) {
    if (err instanceof GatehouseError) {
      process.stderr.write(`gatehouse tokens: ${err.message} (${err.code})\n`)
      return 1
    }
    throw err
  } finally {
    state.close()
  }
}
