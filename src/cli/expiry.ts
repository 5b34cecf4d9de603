import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { formatDuration, parseDurationSeconds } from '../config/duration.ts'
import { loadConfigFile, resolveSecret } from '../config/load.ts'
import { collectInventory, type Inventory } from '../expiry/collect.ts'
import { assess, formatRemaining, iso, needsAttention } from '../expiry/inventory.ts'
import { createTLSObserver, parsePEMChain, providerCAs } from '../expiry/tls.ts'
import { openState } from './state.ts'

const USAGE = `Usage: gatehouse expiry [--config FILE | --data DIR] [--json] [--warn 30d] [--offline]

Every credential Gatehouse depends on, soonest expiry first: its own signing keys and cookie secrets,
API tokens expiring soon, the provider's keys and certificates, the TLS certificates of the provider
and the upstream (probed live unless --offline), its own TLS certificate, the client secret, the
provider copies. Reads the persisted state; the gateway need not run.

Exit status: 0 when nothing expires within --warn (default: the widest alerts.thresholds, 30d),
1 when something does or already has (or an automatic renewal is overdue), 2 on a usage error.
`

export function formatInventoryTable(inventory: Inventory, warnSeconds: number): string {
  const now = inventory.generatedAt
  const head = ['STATUS', 'EXPIRES', 'IN', 'KIND', 'OWNER', 'NAME']
  const rows = inventory.entries.map((e) => [
    assess(e, now, warnSeconds),
    e.expiresAt === undefined ? '-' : iso(e.expiresAt),
    e.expiresAt === undefined
      ? e.ageSeconds === undefined
        ? '-'
        : `(${formatRemaining(e.ageSeconds)} old)`
      : formatRemaining(e.expiresAt - now),
    e.kind,
    e.owner,
    e.name,
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd()
  const out = [line(head)]
  inventory.entries.forEach((e, i) => {
    out.push(line(rows[i]!))
    out.push(`    ${e.detail} [${e.where}]`)
  })
  return `${out.join('\n')}\n`
}

export async function run(argv: string[]): Promise<number> {
  let values: {
    config?: string | undefined
    data?: string | undefined
    json?: boolean | undefined
    warn?: string | undefined
    offline?: boolean | undefined
    help?: boolean | undefined
  }
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        data: { type: 'string' },
        json: { type: 'boolean', default: false },
        warn: { type: 'string' },
        offline: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }))
  } catch (err) {
    process.stderr.write(`gatehouse expiry: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  let warnFlag: number | undefined
  if (values.warn !== undefined) {
    warnFlag = parseDurationSeconds(values.warn)
    if (warnFlag === undefined) {
      process.stderr.write(
        `gatehouse expiry: --warn expects a duration such as 30d, 12h or 90m, got ${JSON.stringify(values.warn)}\n`,
      )
      return 2
    }
  }
  const baseDir =
    values.config !== undefined ? loadConfigFile(values.config).baseDir : resolve(values.data ?? '.gatehouse')
  const state = await openState(values)
  try {
    const { config } = state
    const warnSeconds = warnFlag ?? Math.max(...config.alerts.thresholds)
    const sessionSecrets = config.session.secrets.map((ref, i) =>
      resolveSecret(ref, `session.secrets[${i}]`, baseDir),
    )
    let ownTLS: Parameters<typeof collectInventory>[0]['ownTLS']
    if (config.tls !== undefined) {
      const where = `config tls.cert ${resolve(baseDir, config.tls.cert)}`
      try {
        ownTLS = {
          chain: parsePEMChain(readFileSync(resolve(baseDir, config.tls.cert), 'utf8'), config.tls.cert),
          where,
        }
      } catch (err) {
        ownTLS = { error: `cannot read: ${(err as Error).message}`, where }
      }
    }
    const inventory = await collectInventory({
      config,
      now: Math.floor(Date.now() / 1000),
      store: state.store,
      keys: state.keyRing.list(),
      sessionSecrets,
      warnSeconds,
      tls: {
        observer: createTLSObserver(),
        probe: !values.offline,
        maxAgeSeconds: 0,
        probeTimeoutMs: 3000,
        // The provider's endpoints are probed with the trust its connections use (provider.ca).
        providerCA: values.offline ? undefined : providerCAs(config, baseDir),
      },
      ownTLS,
    })
    const now = inventory.generatedAt
    const statuses = inventory.entries.map((e) => assess(e, now, warnSeconds))
    const attention = statuses.filter(needsAttention).length
    if (values.json) {
      const out = {
        generated_at: iso(now),
        warn_seconds: warnSeconds,
        needs_attention: attention,
        entries: inventory.entries.map((e, i) => ({
          id: e.id,
          kind: e.kind,
          name: e.name,
          owner: e.owner,
          status: statuses[i],
          expires_at: e.expiresAt === undefined ? null : iso(e.expiresAt),
          expires_in_seconds: e.expiresAt === undefined ? null : e.expiresAt - now,
          age_seconds: e.ageSeconds ?? null,
          renewal: e.renewal,
          where: e.where,
          observed_at: iso(e.observedAt),
          detail: e.detail,
        })),
      }
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
    } else {
      process.stdout.write(formatInventoryTable(inventory, warnSeconds))
      process.stdout.write(
        `\n${inventory.entries.length} credentials; ${attention === 0 ? 'none expires' : `${attention} expire${attention === 1 ? 's' : ''} or need${attention === 1 ? 's' : ''} attention`} within ${formatDuration(warnSeconds)}\n`,
      )
    }
    return attention > 0 ? 1 : 0
  } finally {
    await state.close()
  }
}
