/** Options for the security headers added to every response (seed 004's http_headers). */
export interface SecurityHeadersOptions {
  /** HSTS; only ever sent when the public URL is https. `false` turns it off. */
  hsts: false | { maxAgeSeconds: number; includeSubDomains: boolean; preload: boolean }
  /** A Content-Security-Policy, or false. The default restricts framing, plugins and base URIs only, so ordinary apps keep working. */
  contentSecurityPolicy: false | string
  frameOptions: false | 'DENY' | 'SAMEORIGIN'
  referrerPolicy: false | string
  contentTypeOptions: boolean
}

export const defaultSecurityHeaders: SecurityHeadersOptions = {
  hsts: { maxAgeSeconds: 31_536_000, includeSubDomains: false, preload: false },
  contentSecurityPolicy: "frame-ancestors 'self'; base-uri 'self'; object-src 'none'",
  frameOptions: 'SAMEORIGIN',
  referrerPolicy: 'strict-origin-when-cross-origin',
  contentTypeOptions: true,
}

/**
 * The header list, computed once at start: `[lower-case name, value]` pairs. Adapters add each one
 * only when the upstream did not set it, so an app keeps its own stricter CSP.
 * `httpsPublicUrl` decides whether HSTS is sent (browsers ignore it over http anyway).
 */
export function createSecurityHeaders(
  options: SecurityHeadersOptions,
  httpsPublicUrl: boolean,
): ReadonlyArray<readonly [string, string]> {
  const out: Array<readonly [string, string]> = []
  if (options.hsts && httpsPublicUrl) {
    let v = `max-age=${options.hsts.maxAgeSeconds}`
    if (options.hsts.includeSubDomains) v += '; includeSubDomains'
    if (options.hsts.preload) v += '; preload'
    out.push(['strict-transport-security', v])
  }
  if (options.contentSecurityPolicy) out.push(['content-security-policy', options.contentSecurityPolicy])
  if (options.frameOptions) out.push(['x-frame-options', options.frameOptions])
  if (options.referrerPolicy) out.push(['referrer-policy', options.referrerPolicy])
  if (options.contentTypeOptions) out.push(['x-content-type-options', 'nosniff'])
  return Object.freeze(out)
}
