/** Config validation without any Node API, so the edge adapters can validate a config too. */
import type { z } from 'zod'
import { formatDuration } from './duration.ts'
import { ConfigError, type ConfigProblem } from './errors.ts'
import { providerList } from './providers.ts'
import { type Config, configSchema, type ProviderConfig } from './schema.ts'

export { ConfigError, type ConfigProblem } from './errors.ts'

function pathOf(path: PropertyKey[]): string {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`
  return out || '(top level)'
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined
    v = (v as Record<PropertyKey, unknown>)[p]
  }
  return v
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing'
  const s = JSON.stringify(v)
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

function toProblems(input: unknown, issues: z.core.$ZodIssue[]): ConfigProblem[] {
  return issues.map((issue) => {
    const path = pathOf(issue.path)
    const found = valueAt(input, issue.path)
    if (found === undefined && issue.code !== 'unrecognized_keys' && issue.code !== 'custom') {
      const expected = issue.code === 'invalid_type' ? issue.expected : 'a value'
      return { path, message: `required: expected ${expected}, got nothing` }
    }
    // A value given where a secret belongs is never echoed back.
    if (/secret/i.test(path)) return { path, message: issue.message }
    if (issue.code === 'unrecognized_keys') {
      return { path, message: `unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}` }
    }
    if (issue.code === 'invalid_type') {
      return { path, message: `expected ${issue.expected}, got ${describeValue(valueAt(input, issue.path))}` }
    }
    if (issue.code === 'custom') return { path, message: issue.message }
    return { path, message: `${issue.message}; got ${describeValue(valueAt(input, issue.path))}` }
  })
}

/** Each client authentication method has what it sends, and nothing it would not use. */
function clientAuthProblems(p: ProviderConfig, at: string): ConfigProblem[] {
  const out: ConfigProblem[] = []
  const auth = p.client_auth
  if ((auth === 'client_secret_basic' || auth === 'client_secret_post') && p.client_secret === undefined)
    out.push({ path: `${at}.client_secret`, message: `required by client_auth ${auth}, got nothing` })
  if (auth === 'private_key_jwt' && p.client_key === undefined)
    out.push({ path: `${at}.client_key`, message: 'required by client_auth private_key_jwt, got nothing' })
  if (auth === 'none' && p.client_secret !== undefined)
    out.push({
      path: `${at}.client_secret`,
      message: 'client_auth none is a public client: remove the secret, or choose a method that sends it',
    })
  if (p.client_key !== undefined && auth !== 'private_key_jwt')
    out.push({ path: `${at}.client_key`, message: 'used only with client_auth: private_key_jwt' })
  if (auth === 'private_key_jwt' && p.client_secret !== undefined)
    out.push({
      path: `${at}.client_secret`,
      message: 'not used with client_auth private_key_jwt: remove it',
    })
  return out
}

/** Validates an already-parsed config object; throws ConfigError listing every problem. The result is frozen. */
export function validateConfig(input: unknown, file = 'config'): Config {
  const result = configSchema.safeParse(input)
  if (!result.success) throw new ConfigError(file, toProblems(input, result.error.issues))
  const config = result.data
  const problems: ConfigProblem[] = []
  for (const [name, l] of Object.entries(config.lifetimes)) {
    if (l.ttl <= 0)
      problems.push({ path: `lifetimes.${name}.ttl`, message: 'expected a positive duration, got 0' })
    if (l.max_ttl < l.ttl) {
      problems.push({
        path: `lifetimes.${name}.max_ttl`,
        message: `expected at least lifetimes.${name}.ttl (${l.ttl}s), got ${l.max_ttl}s`,
      })
    }
  }
  // A signing key lives next (publish_ahead), then signs (ttl), then stays published while anything it
  // signed can live. Its declared max_ttl must leave room for all three.
  const retention =
    Math.max(
      config.lifetimes.api_token.max_ttl,
      Math.min(config.lifetimes.derived_token.max_ttl, config.lifetimes.api_token.max_ttl),
    ) + config.provider.leeway
  const keyLife = config.keys.publish_ahead + config.lifetimes.signing_key.ttl + retention
  if (config.lifetimes.signing_key.max_ttl < keyLife) {
    problems.push({
      path: 'lifetimes.signing_key.max_ttl',
      message: `expected at least ${Math.ceil(keyLife / 86_400)}d (keys.publish_ahead + signing_key.ttl + the longest API token lifetime it must verify), got ${formatDuration(config.lifetimes.signing_key.max_ttl)}`,
    })
  }
  const publicUrl = new URL(config.public_url)
  // A shared cookie reaches public_url (where sign-in happens) and every app only if all are under it.
  const domain = config.session.cookie_domain
  if (domain !== undefined) {
    const under = (host: string) => host === domain || host.endsWith(`.${domain}`)
    if (!under(publicUrl.hostname))
      problems.push({
        path: 'session.cookie_domain',
        message: `expected a domain public_url's host (${publicUrl.hostname}) is in: sign-in happens there, got ${domain}`,
      })
    config.apps?.forEach((app, i) => {
      if (!under(app.host))
        problems.push({
          path: `apps[${i}].host`,
          message: `expected a host under session.cookie_domain ${domain}, got ${app.host}`,
        })
    })
  }
  // Apps take public_url's scheme: over http, only names that are this machine (RFC 6761 §6.3).
  if (publicUrl.protocol === 'http:') {
    config.apps?.forEach((app, i) => {
      if (app.host !== 'localhost' && !app.host.endsWith('.localhost'))
        problems.push({
          path: `apps[${i}].host`,
          message: `expected a name under .localhost while public_url is http (apps take its scheme), got ${app.host}`,
        })
    })
  }
  // RFC 6761 §6.3: names under .localhost are this machine too (a dev setup with app hosts under one).
  const local = (h: string) => ['localhost', '127.0.0.1', '[::1]'].includes(h) || h.endsWith('.localhost')
  if (publicUrl.protocol === 'http:' && !local(publicUrl.hostname)) {
    problems.push({
      path: 'public_url',
      message: `expected https (http only for localhost), got ${config.public_url}`,
    })
  }
  const issuers = new Map<string, string>()
  for (const { path: at, config: p } of providerList(config)) {
    const issuer = new URL(p.issuer)
    if (issuer.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(issuer.hostname)) {
      problems.push({
        path: `${at}.issuer`,
        message: `expected https (http only for loopback), got ${p.issuer}`,
      })
    }
    // Bearer tokens and logout tokens are matched to their provider by `iss`.
    const key = `${p.issuer} ${p.client_id}`
    const same = issuers.get(key)
    if (same !== undefined)
      problems.push({
        path: `${at}.issuer`,
        message: `expected another issuer or client_id than ${same} (the same client twice cannot be told apart)`,
      })
    else issuers.set(key, at)
    problems.push(...clientAuthProblems(p, at))
    if (p.preset === 'cognito' && p.end_session_url === undefined) {
      problems.push({
        path: `${at}.end_session_url`,
        message: 'expected the Cognito hosted UI logout URL (https://<domain>/logout), got nothing',
      })
    }
  }
  config.routes.forEach((r, i) => {
    if (
      !(
        r.path === '*' ||
        (r.path.startsWith('/') &&
          (!r.path.includes('*') || (r.path.endsWith('/*') && r.path.indexOf('*') === r.path.length - 1)))
      )
    ) {
      problems.push({
        path: `routes[${i}].path`,
        message: `expected "/exact", "/prefix/*" or "*", got ${JSON.stringify(r.path)}`,
      })
    }
  })
  if (problems.length > 0) throw new ConfigError(file, problems)
  return deepFreeze(config)
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}
