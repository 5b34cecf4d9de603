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
  /**
   * Match the path without regard to ASCII case (`/ADMIN` matches `/admin`), for upstreams that serve
   * paths case-insensitively (IIS, Windows or macOS file servers). Default `false`.
   */
  caseInsensitive?: boolean | undefined
}

export interface RouteMatch {
  access: Access
  /** Index of the rule that matched, -1 for the default. */
  rule: number
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )

type Compiled = { test: (path: string) => boolean; methods: ReadonlySet<string> | undefined; access: Access }

function compilePath(pattern: string, caseInsensitive: boolean): (path: string) => boolean {
  if (pattern === '*' || pattern === '/*') return () => true
  if (!pattern.startsWith('/')) throw new TypeError(`route path must start with "/": ${pattern}`)
  const fold = caseInsensitive ? (p: string) => p.toLowerCase() : (p: string) => p
  if (pattern.endsWith('/*')) {
    const base = fold(pattern.slice(0, -2))
    const withSlash = base + '/'
    return (path) => {
      const p = fold(path)
      return p === base || p.startsWith(withSlash)
    }
  }
  if (pattern.includes('*'))
    throw new TypeError(`route path: "*" is only allowed at the end, as "/*": ${pattern}`)
  const exact = fold(pattern)
  const withSlash = exact.endsWith('/') ? exact : exact + '/'
  // Most upstream routers serve `/admin/` as `/admin`: an exact rule covers both.
  return (path) => {
    const p = fold(path)
    return p === exact || p === withSlash
  }
}

/**
 * The form of a normalised path that rules are matched against: the same resource as far as any common
 * upstream is concerned. Path parameters are cut from each segment (`/admin;jsessionid=1` is `/admin` to
 * Tomcat, Jetty and Spring), trailing dots and encoded spaces are cut from each segment (`/admin.` and
 * `/admin%20` are `/admin` to IIS and Windows file servers), and repeated slashes are merged (nginx's
 * `merge_slashes`). The path forwarded upstream is not changed: only what a rule covers is widened.
 */
export function matchingPath(path: string): string {
  if (!MATCHING_CHANGES.test(path)) return path
  const segments = path.split('/')
  let out = ''
  for (let i = 1; i < segments.length; i++) {
    let segment = segments[i]!
    const semicolon = segment.indexOf(';')
    if (semicolon !== -1) segment = segment.slice(0, semicolon)
    let end = segment.length
    for (;;) {
      if (end > 0 && segment.charCodeAt(end - 1) === 0x2e) end--
      else if (end > 2 && segment.endsWith('%20', end)) end -= 3
      else break
    }
    if (end === 0 && i < segments.length - 1) continue
    out += '/' + segment.slice(0, end)
  }
  return out === '' ? '/' : out
}
const MATCHING_CHANGES = /;|\.(?:\/|$)|%20(?:\/|$)|\/\//

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
    test: compilePath(r.path, r.caseInsensitive === true),
    // HEAD is a GET without the body (upstreams run the GET handler for it): a rule for GET covers it.
    methods: r.methods ? methodSet(r.methods) : undefined,
    access: r.access,
  }))
  const fallbackMatch: RouteMatch = { access: fallback, rule: -1 }
  const matches = compiled.map((c, i): RouteMatch => ({ access: c.access, rule: i }))
  return function matchRoute(method, normalisedPath) {
    const path = matchingPath(normalisedPath)
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
 * Normalises a request target for matching: decodes percent-encoded unreserved characters (`/%61dmin`
 * is `/admin`) and resolves dot segments (also percent-encoded ones, as the WHATWG URL parser does) so
 * `/public/../admin` is matched as `/admin`. The same normalised path is what gets forwarded, so the
 * upstream sees exactly what was authorised, and normalising it again changes nothing.
 *
 * Undefined (the caller answers 400 `bad_path`) for a target that is not origin-form or that some
 * upstream would read as another path than the one checked (docs/security.md, "Path normalisation"):
 * - a `#` anywhere: RFC 9112 §3.2 has no fragment in a request target, and URL parsers drop it;
 * - an encoded slash, backslash, semicolon or control character (`%2F`, `%5C`, `%3B`, `%00`–`%1F`,
 *   `%7F`): an upstream that decodes before splitting would see other segments (compare Envoy's
 *   `path_with_escaped_slashes_action`, Spring Security's `StrictHttpFirewall`);
 * - a double-encoded escape (`%25` and two hex digits, `%2561`): an upstream that decodes twice would
 *   see `a`, or `/`;
 * - a `%` not followed by two hex digits, or escapes that are not valid UTF-8 (overlong `%C0%AE` is a
 *   dot to some decoders; RFC 3629 §3 forbids it);
 * - a segment of dots that survives resolution: with path parameters (`..;x`, `.;`, which Tomcat
 *   resolves as `..` and `.`), with trailing encoded spaces (`..%20`, trimmed by Windows), or of three
 *   dots or more.
 */
export function normalizePath(rawPath: string): { pathname: string; search: string } | undefined {
  if (rawPath.charCodeAt(0) !== 0x2f) return undefined
  // Fast path: nothing to decode, resolve or refuse.
  if (!SLOW_PATH.test(rawPath)) {
    const q = rawPath.indexOf('?')
    return q === -1
      ? { pathname: rawPath, search: '' }
      : { pathname: rawPath.slice(0, q), search: rawPath.slice(q) }
  }
  // RFC 9112 §3.2: no fragment, no space or control character in a request target.
  if (rawPath.includes('#') || RAW_CONTROL.test(rawPath)) return undefined
  const q0 = rawPath.indexOf('?')
  const rawPathname = q0 === -1 ? rawPath : rawPath.slice(0, q0)
  // A `%` without two hex digits is refused before decoding: decoding its neighbours could complete it
  // (`%2%61` would become `%2a`, an escape the client never sent).
  if (BROKEN_ESCAPE.test(rawPathname)) return undefined
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
  // Checked after decoding: `%25%32%46` has become `%252F`, a double encoding. Decoding creates no other
  // escape: a `%` only comes from a `%25`, which stays encoded, and no bare `%` was left to complete.
  if (REFUSED_ESCAPE.test(pathname)) return undefined
  try {
    decodeURIComponent(pathname)
  } catch {
    return undefined
  }
  let url: URL
  try {
    url = new URL(
      (q0 === -1 ? pathname : pathname + rawPath.slice(q0)).replace(/^\/+/, '/'),
      'http://gatehouse.invalid',
    )
  } catch {
    return undefined
  }
  if (url.origin !== 'http://gatehouse.invalid') return undefined
  // `/..//x` resolves to `//x`, which some upstreams would parse as an authority.
  const resolved = url.pathname.startsWith('//') ? url.pathname.replace(/^\/+/, '/') : url.pathname
  if (hasDotSegmentLeft(resolved)) return undefined
  // Look-alikes of `/`, `\` and `.` that Unicode normalisation (NFKC) or Windows' best-fit mapping turn
  // into the real ones in some upstreams: `/admin／x` would be `/admin/x` there, after the policy judged
  // another path. Raw or escaped, they are percent-encoded UTF-8 here.
  if (LOOK_ALIKE.test(resolved)) return undefined
  return { pathname: resolved, search: url.search }
}

// Anything but the characters that need no decoding, resolving or encoding takes the slow path.
const SLOW_PATH = /[^\w\-/?=&+,:@!$'()*;~]|\/\//
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const RAW_CONTROL = /[\u0000-\u0020\u007f]/
const BROKEN_ESCAPE = /%(?![0-9A-Fa-f]{2})/
// U+FF0F ／, U+FF3C ＼, U+FF0E ．, U+2215 ∕, U+2216 ∖, U+2044 ⁄, U+29F8 ⧸, U+29F9 ⧹, U+FE68 ﹨, U+2024 ․
const LOOK_ALIKE =
  /%EF%BC%8F|%EF%BC%BC|%EF%BC%8E|%E2%88%95|%E2%88%96|%E2%81%84|%E2%A7%B8|%E2%A7%B9|%EF%B9%A8|%E2%80%A4/i
// An encoded `/`, `\`, `;`, control character or double-encoded escape; or a `%` without two hex digits.
const REFUSED_ESCAPE = /%(?:2F|5C|3B|[01][0-9A-F]|7F|25[0-9A-Fa-f]{2})|%(?![0-9A-F]{2})/i
// A segment of dots and encoded spaces, bare or with parameters, that the URL parser did not resolve.
// (Two disjoint alternatives under one `+`: linear, whatever the input.)
const DOTS_SEGMENT = /\/(?:\.|%20)+(?=[;/]|$)/g

function hasDotSegmentLeft(pathname: string): boolean {
  for (const m of pathname.matchAll(DOTS_SEGMENT)) if (m[0].includes('.')) return true
  return false
}
