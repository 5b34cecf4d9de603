import { parseArgs } from 'node:util'
import { formatDuration } from '../config/duration.ts'
import { ConfigError, loadConfigFile } from '../config/load.ts'
import type { Config } from '../config/schema.ts'

/** The human report of what a config would do: endpoints, lifetimes, routes. */
export function describeConfig(config: Config): string {
  const lines: string[] = []
  const publicUrl = new URL(config.public_url)
  const secure = publicUrl.protocol === 'https:'
  lines.push(`public URL     ${publicUrl.origin}  (callback ${publicUrl.origin}/oauth2/callback)`)
  lines.push(`upstream       ${config.upstream}`)
  lines.push(
    `provider       ${config.provider.issuer}  (preset ${config.provider.preset}, client ${config.provider.client_id})`,
  )
  lines.push(
    `listen         ${config.listen.host}:${config.listen.port}   admin ${config.admin.host}:${config.admin.port}`,
  )
  lines.push(
    `session cookie ${secure ? `__Host-${config.session.cookie_name}` : config.session.cookie_name}  (HttpOnly, SameSite=Lax${secure ? ', Secure' : ', not Secure: http only for localhost'})`,
  )
  lines.push('')
  lines.push('Lifetimes (explicit; nothing inherited silently)')
  const rows: Array<[string, string, string, string]> = [
    ['credential', 'ttl', 'max_ttl', 'notes'],
    [
      'session',
      formatDuration(config.session.ttl),
      formatDuration(config.session.max_ttl),
      `refresh ${formatDuration(config.session.refresh_before)} before the access token expires; never past max_ttl`,
    ],
    [
      'sign-in attempt',
      formatDuration(config.sign_in.ttl),
      formatDuration(config.sign_in.ttl),
      'state cookie, single use',
    ],
    [
      'access token',
      'provider',
      'session max_ttl',
      'from the provider (expires_in); a session without a refresh token ends with it',
    ],
  ]
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)))
  for (const r of rows)
    lines.push(
      `  ${r[0].padEnd(widths[0]!)}  ${r[1].padEnd(widths[1]!)}  ${r[2].padEnd(widths[2]!)}  ${r[3]}`,
    )
  lines.push('')
  lines.push('Routes (first match wins)')
  config.routes.forEach((r, i) => {
    const allow =
      typeof r.allow === 'string'
        ? r.allow
        : `groups [${r.allow.groups.join(', ')}] or emails [${r.allow.emails.join(', ')}]`
    lines.push(`  ${i + 1}. ${(r.methods?.join(',') ?? '*').padEnd(8)} ${r.path.padEnd(24)} ${allow}`)
  })
  lines.push(`  -  ${'*'.padEnd(8)} ${'(everything else)'.padEnd(24)} authenticated`)
  return lines.join('\n') + '\n'
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } })
  if (values.config === undefined) {
    process.stderr.write('gatehouse check: --config FILE is required\n')
    return 1
  }
  try {
    const { config } = loadConfigFile(values.config)
    process.stdout.write(`${values.config}: valid\n\n${describeConfig(config)}`)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
}
