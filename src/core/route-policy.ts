import type { Identity } from './identity.ts'

/** Who may pass a route. `anonymous` also passes identity when a valid session is present. */
export type Access =
  | { kind: 'anonymous' }
  | { kind: 'authenticated' }
  | { kind: 'restricted'; groups: readonly string[]; emails: readonly string[] }

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

type Compiled = { test: (path: string) => boolean; methods: Set<string> | undefined; access: Access }

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
  const compiled: Compiled[] = rules.map((r) => ({
    test: compilePath(r.path),
    methods: r.methods ? new Set(r.methods.map((m) => m.toUpperCase())) : undefined,
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

/** Whether an authenticated identity may pass `access`. Emails compare case-insensitively. */
export function isAllowed(access: Access, identity: Identity): boolean {
  if (access.kind !== 'restricted') return true
  for (const g of access.groups) if (identity.groups.includes(g)) return true
  if (identity.email !== undefined) {
    const email = identity.email.toLowerCase()
    for (const e of access.emails) if (e.toLowerCase() === email) return true
  }
  return false
}

/**
 * Normalises a request path for matching: resolves dot segments (also percent-encoded ones, as the
 * WHATWG URL parser does) so `/public/../admin` is matched as `/admin`. The same normalised path is
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
  try {
    const url = new URL(rawPath.replace(/^\/+/, '/'), 'http://gatehouse.invalid')
    if (url.origin !== 'http://gatehouse.invalid') return undefined
    return { pathname: url.pathname, search: url.search }
  } catch {
    return undefined
  }
}
