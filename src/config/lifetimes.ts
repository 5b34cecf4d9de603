import { formatDuration } from './duration.ts'
import type { ConfigProblem } from './validate.ts'

/**
 * Explicit credential lifetimes, their effective values through chains of parents, expiry caps, and
 * expiry-cliff detection. Pure: no I/O, no clock reads (`now` is always a parameter). All times are in
 * seconds; `expiresAt` values are seconds since the epoch.
 *
 * Every class has its own `ttl` and `max_ttl` and nothing has a default: a missing value is a config
 * error, never a silently inherited backend maximum (the 32-day cap that revoked every child at once).
 */

/** Every kind of credential Gatehouse issues or holds. */
export type CredentialClass = 'session' | 'refresh' | 'api_token' | 'derived_token' | 'signing_key'

/** One class's lifetime, in seconds. `ttlSeconds` is what is granted per issue or renewal; `maxTtlSeconds` the absolute limit. */
export interface Lifetime {
  ttlSeconds: number
  maxTtlSeconds: number
}

/** A lifetime for every class; no class is optional. Config keys: `lifetimes.<class>.ttl` and `.max_ttl`. */
export type LifetimeConfig = Record<CredentialClass, Lifetime>

/** Every credential class, in table order. */
export const CREDENTIAL_CLASSES: readonly CredentialClass[] = Object.freeze([
  'session',
  'refresh',
  'api_token',
  'derived_token',
  'signing_key',
])

/**
 * The class a credential is issued under. A child never outlives its parent: when the parent expires or
 * is revoked, its children go with it, so the parent's `max_ttl` caps the child's.
 */
export const PARENTS: Readonly<Record<CredentialClass, CredentialClass | undefined>> = Object.freeze({
  session: undefined,
  refresh: 'session',
  api_token: undefined,
  derived_token: 'api_token',
  signing_key: undefined,
})

const FIELDS = [
  ['ttlSeconds', 'ttl'],
  ['maxTtlSeconds', 'max_ttl'],
] as const

function describe(v: unknown): string {
  if (v === undefined) return 'nothing'
  if (typeof v === 'number') return String(v)
  const s = JSON.stringify(v) ?? typeof v
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * Checks a {@link LifetimeConfig} (values already in seconds) and lists every problem; empty when valid.
 * Paths use the config file's names (`lifetimes.api_token.max_ttl`), not the field names.
 *
 * Rules: every class present with both values; positive integers; `ttl ≤ max_ttl`. Unknown classes and
 * unknown keys are problems too, since a misspelt attribute is how a default sneaks in. A child whose
 * `max_ttl` exceeds its parent's is *not* a problem: {@link effectiveLifetimes} reports it as capped.
 *
 * @example
 * validateLifetimes({ ...cfg, api_token: { ttlSeconds: 86_400 } })
 * // [{ path: 'lifetimes.api_token.max_ttl', message: 'required: expected a positive integer (seconds), got nothing' }]
 */
export function validateLifetimes(cfg: unknown): ConfigProblem[] {
  if (!isRecord(cfg)) {
    return [
      {
        path: 'lifetimes',
        message: `expected an object with one entry per credential class, got ${describe(cfg)}`,
      },
    ]
  }
  const problems: ConfigProblem[] = []
  for (const key of Object.keys(cfg)) {
    if (!(CREDENTIAL_CLASSES as readonly string[]).includes(key)) {
      problems.push({
        path: `lifetimes.${key}`,
        message: `expected one of ${CREDENTIAL_CLASSES.join(', ')}, got an unknown class`,
      })
    }
  }
  for (const cls of CREDENTIAL_CLASSES) {
    const entry = cfg[cls]
    if (entry === undefined) {
      problems.push({ path: `lifetimes.${cls}`, message: 'required: expected { ttl, max_ttl }, got nothing' })
      continue
    }
    if (!isRecord(entry)) {
      problems.push({
        path: `lifetimes.${cls}`,
        message: `expected { ttl, max_ttl }, got ${describe(entry)}`,
      })
      continue
    }
    for (const key of Object.keys(entry)) {
      if (key !== 'ttlSeconds' && key !== 'maxTtlSeconds') {
        problems.push({
          path: `lifetimes.${cls}.${key}`,
          message: 'expected only ttl and max_ttl, got an unknown key',
        })
      }
    }
    let valid = true
    for (const [field, name] of FIELDS) {
      const v = entry[field]
      const path = `lifetimes.${cls}.${name}`
      if (v === undefined) {
        problems.push({ path, message: 'required: expected a positive integer (seconds), got nothing' })
        valid = false
      } else if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
        problems.push({ path, message: `expected a positive integer (seconds), got ${describe(v)}` })
        valid = false
      }
    }
    if (valid && (entry['ttlSeconds'] as number) > (entry['maxTtlSeconds'] as number)) {
      const ttl = entry['ttlSeconds'] as number
      const max = entry['maxTtlSeconds'] as number
      problems.push({
        path: `lifetimes.${cls}.ttl`,
        message: `expected at most max_ttl (${formatDuration(max)}), got ${formatDuration(ttl)}`,
      })
    }
  }
  return problems
}

/** One row of {@link effectiveLifetimes}: a class's configured and effective limits, in seconds. */
export interface EffectiveLifetime {
  class: CredentialClass
  ttlSeconds: number
  maxTtlSeconds: number
  /** The lowest `max_ttl` along {@link EffectiveLifetime.chain}: the longest any credential of this class can live. */
  effectiveMaxSeconds: number
  /** The ancestor whose `max_ttl` is below this class's own; absent when the class's own `max_ttl` holds. */
  cappedBy?: CredentialClass
  /** The class, then its parent, grandparent… up to a root class. */
  chain: CredentialClass[]
}

function chainOf(cls: CredentialClass): CredentialClass[] {
  const chain: CredentialClass[] = [cls]
  for (let p = PARENTS[cls]; p !== undefined; p = PARENTS[p]) {
    // PARENTS is a fixed tree; this guards against a future edit that makes it a cycle.
    if (chain.includes(p))
      throw new TypeError(`credential class parents form a cycle: ${[...chain, p].join(' → ')}`)
    chain.push(p)
  }
  return chain
}

/**
 * The effective maximum lifetime of every class: the minimum `max_ttl` over the class and its ancestors.
 * Expects a config that passed {@link validateLifetimes}. When several ancestors share the lowest
 * `max_ttl`, `cappedBy` names the nearest.
 *
 * @example
 * effectiveLifetimes(cfg).find((r) => r.class === 'derived_token')
 * // { class: 'derived_token', maxTtlSeconds: 7_776_000, effectiveMaxSeconds: 2_592_000, cappedBy: 'api_token', … }
 */
export function effectiveLifetimes(cfg: LifetimeConfig): EffectiveLifetime[] {
  return CREDENTIAL_CLASSES.map((cls) => {
    const chain = chainOf(cls)
    const own = cfg[cls]
    let effectiveMaxSeconds = own.maxTtlSeconds
    let cappedBy: CredentialClass | undefined
    for (const ancestor of chain.slice(1)) {
      const max = cfg[ancestor].maxTtlSeconds
      if (max < effectiveMaxSeconds) {
        effectiveMaxSeconds = max
        cappedBy = ancestor
      }
    }
    const row: EffectiveLifetime = {
      class: cls,
      ttlSeconds: own.ttlSeconds,
      maxTtlSeconds: own.maxTtlSeconds,
      effectiveMaxSeconds,
      chain,
    }
    if (cappedBy !== undefined) row.cappedBy = cappedBy
    return row
  })
}

/** What cut a child's expiry short, reported by the token service: a cap is never silent. */
export interface ExpiryCap {
  /** The expiry asked for (seconds since epoch). */
  requested: number
  /** The expiry granted (seconds since epoch). */
  granted: number
  /** `class_max_ttl`: the class's effective max lifetime; `parent`: the parent credential's own expiry. */
  by: 'class_max_ttl' | 'parent'
  /** The parent's id when `by` is `parent`. */
  parentId?: string
}

/** Input of {@link capExpiry}; all expiries in seconds since the epoch. */
export interface CapExpiryInput {
  /** What the caller asked for, e.g. `now + ttlSeconds`. */
  requestedExpiresAt: number
  /** The latest the class allows, e.g. `firstIssuedAt + effectiveMaxSeconds`. */
  classMaxExpiresAt: number
  /** The credential this one is issued under; a child never outlives it. */
  parent?: { id: string; expiresAt: number }
}

/**
 * A child's expiry: the earliest of the requested expiry, the class maximum, and the parent's expiry.
 * When anything cut the request, `capped` says what. If the parent's expiry and the class maximum tie,
 * the cause is `parent`: a parent cap is the one that makes many children expire at the same instant.
 *
 * @example
 * capExpiry({ requestedExpiresAt: now + 7 * 86_400, classMaxExpiresAt: now + 30 * 86_400, parent: { id: 'tok_1', expiresAt: now + 3600 } })
 * // { expiresAt: now + 3600, capped: { requested: now + 604_800, granted: now + 3600, by: 'parent', parentId: 'tok_1' } }
 */
export function capExpiry(input: CapExpiryInput): { expiresAt: number; capped?: ExpiryCap } {
  const { requestedExpiresAt, classMaxExpiresAt, parent } = input
  for (const [name, v] of [
    ['requestedExpiresAt', requestedExpiresAt],
    ['classMaxExpiresAt', classMaxExpiresAt],
    ['parent.expiresAt', parent?.expiresAt],
  ] as const) {
    if (v !== undefined && !Number.isFinite(v))
      throw new TypeError(`capExpiry: ${name} must be a finite number of seconds`)
  }
  if (
    parent !== undefined &&
    parent.expiresAt <= classMaxExpiresAt &&
    parent.expiresAt < requestedExpiresAt
  ) {
    return {
      expiresAt: parent.expiresAt,
      capped: { requested: requestedExpiresAt, granted: parent.expiresAt, by: 'parent', parentId: parent.id },
    }
  }
  if (classMaxExpiresAt < requestedExpiresAt) {
    return {
      expiresAt: classMaxExpiresAt,
      capped: { requested: requestedExpiresAt, granted: classMaxExpiresAt, by: 'class_max_ttl' },
    }
  }
  return { expiresAt: requestedExpiresAt }
}

/** The classes whose credentials are signed by a signing key, and so must stay verifiable after it retires. */
const SIGNED_CLASSES: readonly CredentialClass[] = ['api_token', 'derived_token']

/**
 * Seconds a retired signing key must stay published: the longest effective max lifetime of anything it
 * signs (api_token, derived_token). Derived, never configured, so raising a token's `max_ttl` can't
 * outlive its key. Callers add their own clock leeway and verifier cache time on top.
 *
 * @example
 * signingKeyRetention(cfg) // 2_592_000 when api_token max_ttl is 30d and derived_token is capped by it
 */
export function signingKeyRetention(cfg: LifetimeConfig): number {
  let longest = 0
  for (const row of effectiveLifetimes(cfg)) {
    if (SIGNED_CLASSES.includes(row.class)) longest = Math.max(longest, row.effectiveMaxSeconds)
  }
  return longest
}

/** Options of {@link detectExpiryCliff}. */
export interface ExpiryCliffOptions {
  /** Seconds since epoch; only credentials with `expiresAt > now` count. */
  now: number
  /** Width of the sliding window in seconds (e.g. 3600). Windows are half-open: `[start, start + windowSeconds)`. */
  windowSeconds: number
  /** A cliff is strictly more than this fraction (0–1) of live credentials expiring in one window. */
  share: number
  /** …and at least this many of them, so three tokens in a test deployment are not a cliff. */
  minCount: number
}

/** Result of {@link detectExpiryCliff}. The window fields describe the worst window whenever anything is alive. */
export interface ExpiryCliff {
  cliff: boolean
  /** Start of the worst window: the earliest expiry in it (seconds since epoch). */
  windowStart?: number
  /** `windowStart + windowSeconds` (exclusive). */
  windowEnd?: number
  /** Live credentials expiring in the worst window. */
  count?: number
  /** Live credentials at `now`. */
  total: number
  /** `count / total`. */
  share?: number
}

/**
 * Whether many live credentials expire at nearly the same time, the shape a parent's cap leaves behind
 * (every child revoked at the parent's 32-day limit). Sorts the live expiries and slides a window over
 * them: O(n log n). Returns the window with the most expiries, earliest on a tie.
 *
 * @example
 * detectExpiryCliff(expiries, { now, windowSeconds: 3600, share: 0.5, minCount: 10 })
 * // { cliff: true, windowStart: 1_700_000_000, windowEnd: 1_700_003_600, count: 60, total: 100, share: 0.6 }
 */
export function detectExpiryCliff(expiries: readonly number[], options: ExpiryCliffOptions): ExpiryCliff {
  const { now, windowSeconds, share, minCount } = options
  if (!Number.isFinite(now)) throw new TypeError('detectExpiryCliff: now must be a finite number of seconds')
  if (!Number.isFinite(windowSeconds) || windowSeconds <= 0) {
    throw new TypeError('detectExpiryCliff: windowSeconds must be a positive number')
  }
  if (!(share >= 0 && share <= 1)) throw new TypeError('detectExpiryCliff: share must be between 0 and 1')
  if (!Number.isSafeInteger(minCount) || minCount < 1) {
    throw new TypeError('detectExpiryCliff: minCount must be a positive integer')
  }
  // NaN fails the comparison and is dropped with the expired ones.
  const alive = expiries.filter((e) => e > now).sort((a, b) => a - b)
  const total = alive.length
  if (total === 0) return { cliff: false, total }
  let bestStart = 0
  let bestCount = 0
  let end = 0
  for (let start = 0; start < total; start++) {
    const from = alive[start]!
    if (end < start + 1) end = start + 1
    while (end < total && alive[end]! - from < windowSeconds) end++
    if (end - start > bestCount) {
      bestCount = end - start
      bestStart = start
    }
  }
  const windowStart = alive[bestStart]!
  const worstShare = bestCount / total
  return {
    cliff: worstShare > share && bestCount >= minCount,
    windowStart,
    windowEnd: windowStart + windowSeconds,
    count: bestCount,
    total,
    share: worstShare,
  }
}

/**
 * The lifetime table `gatehouse check` prints: class, ttl, max_ttl, effective max and what caps it.
 * Durations as `12h`, `7d`, `30d`. No trailing newline.
 *
 * @example
 * formatLifetimeTable(effectiveLifetimes(cfg))
 * // class          ttl  max_ttl  effective max  notes
 * // derived_token  1d   90d      30d            capped by api_token max_ttl (30d)
 */
export function formatLifetimeTable(rows: readonly EffectiveLifetime[]): string {
  const lines: string[][] = [['class', 'ttl', 'max_ttl', 'effective max', 'notes']]
  for (const r of rows) {
    const notes: string[] = []
    if (r.cappedBy !== undefined) {
      notes.push(`capped by ${r.cappedBy} max_ttl (${formatDuration(r.effectiveMaxSeconds)})`)
    }
    if (r.ttlSeconds > r.effectiveMaxSeconds)
      notes.push(`ttl cut to ${formatDuration(r.effectiveMaxSeconds)}`)
    lines.push([
      r.class,
      formatDuration(r.ttlSeconds),
      formatDuration(r.maxTtlSeconds),
      formatDuration(r.effectiveMaxSeconds),
      notes.join('; '),
    ])
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)))
  return lines
    .map((l) =>
      l
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}
