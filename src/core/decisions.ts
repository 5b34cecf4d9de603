import { escapeHtml } from './encoding.ts'
import type { Identity } from './identity.ts'

/** What the request looked like, as the adapter saw it. Header names are lower-case. */
export interface RequestFacts {
  method: string
  /** The request target as received: path and query. */
  url: string
  header(name: string): string | undefined
  clientAddress: string
  /**
   * The body as an `application/x-www-form-urlencoded` form, read only by Gatehouse's own form endpoint
   * (back-channel logout): `too_large` past `maxBytes`, `unsupported_media_type` for another type. Absent
   * where the adapter reads no bodies (Lambda@Edge), and then such an endpoint answers 400.
   */
  form?: ((maxBytes: number) => Promise<URLSearchParams | 'too_large' | 'unsupported_media_type'>) | undefined
}

/** Pass the request to the upstream. */
export interface Allow {
  kind: 'allow'
  /** The normalised path and query to forward (what the policy was checked against). */
  path: string
  identity: Identity | undefined
  /** Headers to set on the upstream request (identity, optionally the access token, degraded marker). */
  upstreamHeaders: Readonly<Record<string, string>>
  /**
   * Further header names (lower case) the adapter removes from the client's request, in any spelling
   * (`_` read as `-`), besides those Gatehouse always owns: `identity.headers_from_claims`.
   */
  dropFromClient?: ReadonlySet<string> | undefined
  /** The Cookie header for the upstream, with Gatehouse's cookies removed. */
  upstreamCookie: string | undefined
  /** Set-Cookie values for the client (after a refresh). */
  setCookies: string[]
}

/** Gatehouse answers the client itself. `code` is the stable reason, used in logs and metrics. */
export interface Respond {
  kind: 'respond'
  status: number
  code: string
  headers: Record<string, string>
  body: string
  setCookies: string[]
  /**
   * Wait this long before sending the answer: set when a client keeps presenting a credential that was
   * already refused. Such clients retry as soon as they get an answer (seed 003), so the answer's timing
   * sets their rate. Adapters that can hold a response cheaply (a timer, not a thread) honour it.
   */
  delayMs?: number
}

export type Decision = Allow | Respond

/** A browser navigation (gets redirects and pages) as opposed to an API call (gets JSON and 401s). */
export function isNavigation(facts: RequestFacts): boolean {
  if (facts.method !== 'GET' && facts.method !== 'HEAD') return false
  const mode = facts.header('sec-fetch-mode')
  if (mode !== undefined) return mode === 'navigate'
  if (facts.header('x-requested-with') !== undefined) return false
  return (facts.header('accept') ?? '').includes('text/html')
}

export function wantsHtml(facts: RequestFacts): boolean {
  return (facts.header('accept') ?? '').includes('text/html')
}

const NO_STORE = 'no-store'

export function redirect(
  location: string,
  setCookies: string[] = [],
  code = 'redirect',
  status = 302,
): Respond {
  return {
    kind: 'respond',
    status,
    code,
    headers: { location, 'cache-control': NO_STORE },
    body: '',
    setCookies,
  }
}

export function json(
  status: number,
  code: string,
  body: Record<string, unknown>,
  extraHeaders: Record<string, string> = {},
  setCookies: string[] = [],
): Respond {
  return {
    kind: 'respond',
    status,
    code,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': NO_STORE,
      ...extraHeaders,
    },
    body: JSON.stringify(body),
    setCookies,
  }
}

/** A link on an HTML page: a same-origin path (or the provider's URL) and what it says. */
export interface PageLink {
  href: string
  text: string
}

/** A small self-contained HTML page (no scripts, no external resources). */
export function page(
  status: number,
  code: string,
  title: string,
  message: string,
  link?: PageLink | readonly PageLink[],
  extraHeaders: Record<string, string> = {},
  setCookies: string[] = [],
): Respond {
  const links: readonly PageLink[] = link === undefined ? [] : 'href' in link ? [link] : link
  const linkHtml = links
    .map((l) => `<p><a href="${escapeHtml(l.href)}">${escapeHtml(l.text)}</a></p>`)
    .join('\n')
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}code{background:#f3f3f3;padding:0 .3em}</style></head>
<body><main><h1>${escapeHtml(title)}</h1><p>${escapeHtml(message)}</p>${linkHtml}
<p><small>Gatehouse · <code>${escapeHtml(code)}</code></small></p></main></body></html>
`
  return {
    kind: 'respond',
    status,
    code,
    headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': NO_STORE, ...extraHeaders },
    body,
    setCookies,
  }
}

/** An error answer in the form the client reads: a page for browsers, JSON otherwise. */
export function problem(
  facts: RequestFacts,
  status: number,
  code: string,
  title: string,
  message: string,
  options: {
    link?: PageLink | readonly PageLink[]
    headers?: Record<string, string>
    setCookies?: string[]
  } = {},
): Respond {
  if (wantsHtml(facts)) {
    return page(status, code, title, message, options.link, options.headers, options.setCookies)
  }
  return json(status, code, { error: code, error_description: message }, options.headers, options.setCookies)
}

function quoteParam(value: string): string {
  // RFC 6750 §3: error_description uses %x20-21 / %x23-5B / %x5D-7E (no `"` or `\`)
  return value.replace(/["\\]/g, '').replace(/[^\x20-\x7e]/g, '')
}

/**
 * 401 for API clients. With no credentials at all there is no error code (RFC 6750 §3.1); with a bad
 * or expired one, `error="invalid_token"` and a short description a client can act on.
 */
export function unauthorized(
  realm: string,
  code: string,
  description: string,
  invalidToken: boolean,
  setCookies: string[] = [],
): Respond {
  let challenge = `Bearer realm="${quoteParam(realm)}"`
  if (invalidToken) challenge += `, error="invalid_token", error_description="${quoteParam(description)}"`
  return json(
    401,
    code,
    { error: code, error_description: description },
    { 'www-authenticate': challenge },
    setCookies,
  )
}

/**
 * 403 for a request whose credential lacks a scope the route requires (RFC 6750 §3.1): `scope` lists
 * every scope the route requires, space-separated. A browser navigation gets a page.
 */
export function insufficientScope(
  facts: RequestFacts,
  realm: string,
  scopes: readonly string[],
  description: string,
  setCookies: string[] = [],
): Respond {
  const scope = scopes.join(' ')
  const challenge = `Bearer realm="${quoteParam(realm)}", error="insufficient_scope", scope="${quoteParam(scope)}"`
  const headers = { 'www-authenticate': challenge }
  if (wantsHtml(facts)) {
    return page(403, 'insufficient_scope', 'Access denied', description, undefined, headers, setCookies)
  }
  return json(
    403,
    'insufficient_scope',
    { error: 'insufficient_scope', error_description: description, scope },
    headers,
    setCookies,
  )
}
