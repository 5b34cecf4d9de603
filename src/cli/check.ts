import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { appPublicUrl } from '../apps.ts'
import { formatDuration } from '../config/duration.ts'
import { detectExpiryCliff, effectiveLifetimes, formatLifetimeTable } from '../config/lifetimes.ts'
import { ConfigError, loadConfigFile } from '../config/load.ts'
import { providerList } from '../config/providers.ts'
import type { Config } from '../config/schema.ts'
import { keyRetentionSeconds, lifetimeConfig } from '../services.ts'
import { openDatabase } from '../store/open-sqlite.ts'
import { createSQLiteStore } from '../store/sqlite-store.ts'

/** The human report of what a config would do: endpoints, lifetimes, routes. */
export function describeConfig(config: Config): { text: string; warnings: string[] } {
  const lines: string[] = []
  const warnings: string[] = []
  const publicUrl = new URL(config.public_url)
  const secure = publicUrl.protocol === 'https:'
  const domain = config.session.cookie_domain
  const listed = config.providers !== undefined
  // With a providers list, each provider has its own callback path (register each at its provider).
  const callbacks = (origin: string, only?: readonly string[]) =>
    listed
      ? providerList(config)
          .filter((p) => only === undefined || only.includes(p.name))
          .map((p) => `${origin}/oauth2/callback/${p.name} (at ${p.name})`)
      : [`${origin}/oauth2/callback`]
  // Logout endpoints are served on every app host; public_url's own host serves none with apps.
  const logoutOrigin =
    config.apps === undefined || domain !== undefined
      ? publicUrl.origin
      : appPublicUrl(config, config.apps[0]!).origin
  if (config.apps === undefined) {
    lines.push(`public URL     ${publicUrl.origin}  (callback ${callbacks(publicUrl.origin).join(', ')})`)
    lines.push(`upstream       ${config.upstream}`)
  } else if (domain !== undefined) {
    lines.push(
      `public URL     ${publicUrl.origin}  (sign-in for every app; callback ${callbacks(publicUrl.origin).join(', ')})`,
    )
    lines.push(`apps           ${config.apps.length}; one session for all of them (cookie Domain=${domain})`)
  } else {
    lines.push(`public URL     ${publicUrl.origin}  (serves no app unless one is at its host)`)
    lines.push(`apps           ${config.apps.length}; register every callback below at the provider`)
  }
  for (const { name, config: p } of providerList(config)) {
    const label = listed ? `${`provider ${name}`.padEnd(14)} ` : 'provider       '
    lines.push(`${label}${p.issuer}  (preset ${p.preset}, client ${p.client_id})`)
    const indent = listed ? '  ' : ''
    lines.push(
      `${indent}client auth    ${p.client_auth ?? (p.client_secret === undefined ? 'none (public client, PKCE)' : 'client_secret_basic, else client_secret_post (from discovery)')}`,
    )
    lines.push(
      `${indent}bearer tokens  aud ${p.preset === 'cognito' ? `client_id claim in [${(p.audiences ?? [p.client_id]).join(', ')}]` : p.audiences === undefined ? `${p.client_id} (only with other audiences, or typed at+jwt)` : `in [${p.audiences.join(', ')}]`}, typ ${p.access_token_typ}; ID tokens refused`,
    )
    if (listed)
      lines.push(
        `  logout         back-channel ${logoutOrigin}/oauth2/backchannel_logout/${name}, front-channel ${logoutOrigin}/oauth2/frontchannel_logout/${name}`,
      )
  }
  lines.push(
    `listen         ${config.listen.host}:${config.listen.port}   admin ${config.admin.host}:${config.admin.port}`,
  )
  lines.push(
    `session cookie ${secure ? `${domain === undefined ? '__Host-' : '__Secure-'}${config.session.cookie_name}` : config.session.cookie_name}  (HttpOnly, SameSite=Lax${secure ? ', Secure' : ', not Secure: http only for localhost'}${domain === undefined ? ', this host only' : `, Domain=${domain}: one sign-in at ${publicUrl.origin} for every app`})`,
  )
  lines.push(
    `session        refreshed ${formatDuration(config.session.refresh_before)} before the provider's access token expires`,
  )
  lines.push(
    `API tokens     ${config.keys.algorithm}-signed JWTs, prefix gth_, keys at /.well-known/jwks.json`,
  )
  lines.push('')
  lines.push('Lifetimes (explicit; a child never outlives its parent)')
  const rows = effectiveLifetimes(lifetimeConfig(config))
  lines.push(formatLifetimeTable(rows))
  for (const r of rows) {
    if (r.cappedBy !== undefined) {
      warnings.push(
        `lifetimes.${r.class}.max_ttl is ${formatDuration(r.maxTtlSeconds)} but its parent ${r.cappedBy} ends after ${formatDuration(r.effectiveMaxSeconds)}: every ${r.class} is cut to that`,
      )
    }
  }
  const retention = keyRetentionSeconds(config)
  lines.push(
    `Signing keys: published ${formatDuration(config.keys.publish_ahead)} before they sign, sign for ${formatDuration(config.lifetimes.signing_key.ttl)}, stay published ${formatDuration(retention - config.provider.leeway)} (+${config.provider.leeway}s leeway) after: the longest API token, derived, not configured`,
  )
  if (config.apps === undefined) {
    lines.push('')
    lines.push('Routes (first match wins)')
    lines.push(...describeRoutes(config.routes))
  }
  for (const app of config.apps ?? []) {
    const url = appPublicUrl(config, app).origin
    lines.push('')
    lines.push(`App ${app.name}: ${url}${app.path_prefix === '/' ? '' : app.path_prefix} -> ${app.upstream}`)
    if (domain === undefined) for (const c of callbacks(url, app.providers)) lines.push(`  callback ${c}`)
    if (app.providers !== undefined) lines.push(`  providers ${app.providers.join(', ')} (others refused)`)
    lines.push(
      `  identity: access token ${(app.identity.pass_access_token ?? config.identity.pass_access_token) ? 'passed' : 'not passed'}`,
    )
    lines.push('  Routes (first match wins)')
    lines.push(...describeRoutes(app.routes).map((l) => `  ${l}`))
  }
  return { text: `${lines.join('\n')}\n`, warnings }
}

function describeRoutes(routes: Config['routes']): string[] {
  const lines: string[] = []
  routes.forEach((r, i) => {
    const a = r.allow
    const who =
      typeof a === 'string' ? a : `groups [${a.groups.join(', ')}] or emails [${a.emails.join(', ')}]`
    const allow =
      typeof a === 'string' || a.scopes === undefined
        ? who
        : a.groups.length + a.emails.length === 0
          ? `bearer token with scopes [${a.scopes.join(', ')}]`
          : `${who}, and bearer token with scopes [${a.scopes.join(', ')}]`
    lines.push(`  ${i + 1}. ${(r.methods?.join(',') ?? '*').padEnd(8)} ${r.path.padEnd(24)} ${allow}`)
  })
  lines.push(`  -  ${'*'.padEnd(8)} ${'(everything else)'.padEnd(24)} authenticated`)
  return lines
}

/** Seed 001's shape among the live API tokens in the data dir, if there is one. */
async function cliffWarnings(config: Config, baseDir: string): Promise<string[]> {
  const dataDir = resolve(baseDir, config.data_dir)
  if (!existsSync(resolve(dataDir, 'gatehouse.db'))) return []
  const db = openDatabase(dataDir)
  try {
    const now = Math.floor(Date.now() / 1000)
    const live = (await createSQLiteStore(db).listTokens({ now })).filter((t) => t.revokedAt === undefined)
    const cliff = detectExpiryCliff(
      live.map((t) => t.expiresAt),
      {
        now,
        windowSeconds: config.expiry_cliff.window,
        share: config.expiry_cliff.share,
        minCount: config.expiry_cliff.min_count,
      },
    )
    if (!cliff.cliff) return []
    return [
      `expiry cliff: ${cliff.count} of ${cliff.total} live API tokens (${Math.round((cliff.share ?? 0) * 100)}%) expire between ${new Date(cliff.windowStart! * 1000).toISOString()} and ${new Date(cliff.windowEnd! * 1000).toISOString()}`,
    ]
  } finally {
    db.close()
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } })
  if (values.config === undefined) {
    process.stderr.write('gatehouse check: --config FILE is required\n')
    return 1
  }
  try {
    const { config, baseDir } = loadConfigFile(values.config)
    const { text, warnings } = describeConfig(config)
    warnings.push(...(await cliffWarnings(config, baseDir)))
    process.stdout.write(`${values.config}: valid\n\n${text}`)
    if (warnings.length > 0)
      process.stdout.write(`\nWarnings\n${warnings.map((w) => `  ! ${w}`).join('\n')}\n`)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
}
