import { type Identity, SCOPE_TOKEN } from './identity.ts'

/**
 * Who may pass a route. `anonymous` also passes identity when a valid session is present.
 * `restricted`: every condition given must hold: one of `groups` or `emails` (when either is given), and
 * every one of `scopes` on the bearer token (when given; a browser session has no scopes).
 */
export type Access =
  | { kind: 'anonymous' }
  | { kind: 'authenticated' }
  | {
      kind: 'restricted'
      groups: readonly string[]
      emails: readonly string[]
      /** Scopes the bearer token must all carry. Absent or empty: no scope condition. */
      scopes?: readonly string[] | undefined
    }

export interface RouteRule {
  /**
   * `/exact`, `/prefix/*` (matches `/prefix` and everything below it), or `*` for every path.
   */
  path: string
  /** Upper-case methods; omitted means every method. */
  methods?: readonly string[] | undefined
  access: Access
}

export interface RouteMatch {
  access: Access
  /** Index of the rule that matched, -1 for the default. */
  rule: number
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )

type Compiled = { test: (path: string) => boolean; methods: ReadonlySet<string> | undefined; access: Access }

function compilePath(pattern: string): (path: string) => boolean {
  if (pattern === '*' || pattern === '/*') return () => true
  if (!pattern.startsWith('/')) throw new TypeError(`route path must start with "/": ${pattern}`)
  if (pattern.endsWith('/*')) {
    const base = pattern.slice(0, -2)
    const withSlash = base + '/'
    return (path) => path === base || path.startsWith(withSlash)
  }
  if (pattern.includes('*'))
    throw new TypeError(`route path: "*" is only allowed at the end, as "/*": ${pattern}`)
  return (path) => path === pattern
}

/**
 * Compiles the path policy once. Rules are tried in order; the first match wins; when none matches,
 * `fallback` applies (authenticated by default).
 */
export function compileRoutePolicy(
  rules: readonly RouteRule[],
  fallback: Access = { kind: 'authenticated' },
): (method: string, path: string) => RouteMatch {
  for (const r of rules) {
    if (r.access.kind !== 'restricted') continue
    for (const s of r.access.scopes ?? [])
      if (!SCOPE_TOKEN.test(s))
        throw new TypeError(`route ${r.path}: scope ${JSON.stringify(s)} is not a scope token`)
  }
  const compiled: Compiled[] = rules.map((r) => ({
    test: compilePath(r.path),
    // HEAD is a GET without the body (upstreams run the GET handler for it): a rule for GET covers it.
    methods: r.methods ? methodSet(r.methods) : undefined,
    access: r.access,
  }))
  const fallbackMatch: RouteMatch = { access: fallback, rule: -1 }
  const matches = compiled.map((c, i): RouteMatch => ({ access: c.access, rule: i }))
  return function matchRoute(method, path) {
    for (let i = 0; i < compiled.length; i++) {
      const c = compiled[i]!
      if (c.methods !== undefined && !c.methods.has(method)) continue
      if (c.test(path)) return matches[i]!
    }
    return fallbackMatch
  }
}

/**
 * Whether an authenticated identity passes the groups/emails condition of `access`. Emails compare
 * case-insensitively. A rule that names only scopes has no such condition; one that names nothing
 * at all lets no one pass.
 */
export function isAllowed(access: Access, identity: Identity): boolean {
  if (access.kind !== 'restricted') return true
  if (access.groups.length === 0 && access.emails.length === 0 && (access.scopes?.length ?? 0) > 0)
    return true
  for (const g of access.groups) if (identity.groups.includes(g)) return true
  if (identity.email !== undefined) {
    const email = identity.email.toLowerCase()
    for (const e of access.emails) if (e.toLowerCase() === email) return true
  }
  return false
}

/**
 * Whether the credential carries every scope `access` asks for. A browser session (`identity.scopes`
 * undefined) carries none, so it never passes a rule that names scopes.
 */
export function hasRequiredScopes(access: Access, identity: Identity): boolean {
  if (access.kind !== 'restricted' || access.scopes === undefined || access.scopes.length === 0) return true
  const held = identity.scopes
  if (held === undefined) return false
  for (const s of access.scopes) if (!held.includes(s)) return false
  return true
}

function methodSet(methods: readonly string[]): ReadonlySet<string> {
  const set = new Set(methods.map((m) => m.toUpperCase()))
  if (set.has('GET')) set.add('HEAD')
  return set
}

/**
 * Normalises a request path for matching: decodes percent-encoded unreserved characters (`/%61dmin`
 * is `/admin`) and resolves dot segments (also percent-encoded ones, as the WHATWG URL parser does) so
 * `/public/../admin` is matched as `/admin`. The same normalised path is
 * what gets forwarded, so the upstream sees exactly what was authorised. Undefined for a path that
 * is not origin-form, or that carries an encoded slash, backslash or NUL (`%2F`, `%5C`, `%00`): an
 * upstream that decodes those before resolving dot segments would see another path than the one
 * that was checked (compare Envoy's `path_with_escaped_slashes_action`).
 */
export function normalizePath(rawPath: string): { pathname: string; search: string } | undefined {
  if (rawPath.charCodeAt(0) !== 0x2f) return undefined
  // Fast path: nothing to resolve.
  if (
    !rawPath.includes('.') &&
    !rawPath.includes('\\') &&
    !rawPath.includes('%') &&
    !rawPath.includes('//')
  ) {
    const q = rawPath.indexOf('?')
    return q === -1
      ? { pathname: rawPath, search: '' }
      : { pathname: rawPath.slice(0, q), search: rawPath.slice(q) }
  }
  const q0 = rawPath.indexOf('?')
  const rawPathname = q0 === -1 ? rawPath : rawPath.slice(0, q0)
  if (/%(2f|5c|00)/i.test(rawPathname)) return undefined
  // RFC 3986 §6.2.2: percent-encoded unreserved characters mean the same as the characters, so they are
  // decoded (and other escapes upper-cased) before matching: `/%61pi/x` is `/api/x` to the policy and to
  // the upstream alike, never a way around a rule.
  const pathname = rawPathname.replace(/%([0-9A-Fa-f]{2})/g, (encoded, hex: string) => {
    const c = Number.parseInt(hex, 16)
    const unreserved =
      (c >= 0x41 && c <= 0x5a) ||
      (c >= 0x61 && c <= 0x7a) ||
      (c >= 0x30 && c <= 0x39) ||
      c === 0x2d ||
      c === 0x2e ||
      c === 0x5f ||
      c === 0x7e
    return unreserved ? String.fromCharCode(c) : encoded.toUpperCase()
  })
  try {
    const url = new URL(
      (q0 === -1 ? pathname : pathname + rawPath.slice(q0)).replace(/^\/+/, '/'),
      'http://gatehouse.invalid',
    )
    if (url.origin !== 'http://gatehouse.invalid') return undefined
    return { pathname: url.pathname, search: url.search }
  } catch {
    return undefined
  }
}
