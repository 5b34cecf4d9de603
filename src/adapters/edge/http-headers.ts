/**
 * Seed 004's http_headers: an origin-response trigger that adds the security headers (HSTS, CSP,
 * frame, referrer, content-type options) to every response from the origin that lacks them. Its
 * bundle holds the header list and nothing else: no secret, no provider key, no crypto.
 */

import type { HeadersBundle } from './bundle.ts'
import {
  addMissingHeaders,
  type CloudFrontResponse,
  type CloudFrontResponseEvent,
  recordOf,
} from './cloudfront.ts'

/**
 * @example
 * export const handler = createHttpHeadersHandler({ function: 'http-headers', builtAt, securityHeaders })
 */
export function createHttpHeadersHandler(
  bundle: HeadersBundle,
): (event: CloudFrontResponseEvent) => Promise<CloudFrontResponse> {
  if (bundle.function !== 'http-headers')
    throw new TypeError(`bundle.function: expected http-headers, got ${bundle.function}`)
  const list = bundle.securityHeaders
  return async function httpHeaders(event) {
    const cf = recordOf(event)
    const type = cf.config.eventType
    if ((type !== 'origin-response' && type !== 'viewer-response') || cf.response === undefined) {
      throw new TypeError(`http-headers must be an origin-response trigger, got ${type}`)
    }
    addMissingHeaders(cf.response.headers, list)
    return cf.response
  }
}
