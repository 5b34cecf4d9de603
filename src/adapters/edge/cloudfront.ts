/**
 * The CloudFront Lambda@Edge event shapes Gatehouse reads and writes (AWS CloudFront Developer Guide,
 * "Lambda@Edge event structure"), and the small translations both edge handlers share. Header maps
 * are keyed by the lower-case name; each entry keeps the name as sent in `key`.
 */

export interface CloudFrontHeader {
  key?: string
  value: string
}

export type CloudFrontHeaders = Record<string, CloudFrontHeader[]>

export interface CloudFrontConfig {
  distributionDomainName: string
  distributionId?: string
  eventType: 'viewer-request' | 'origin-request' | 'origin-response' | 'viewer-response'
  requestId: string
}

export interface CloudFrontRequest {
  clientIp: string
  headers: CloudFrontHeaders
  method: string
  /** Without the leading `?`; empty when there is none. */
  querystring: string
  uri: string
  body?: { action?: string; data: string; encoding: 'base64' | 'text'; inputTruncated?: boolean }
}

export interface CloudFrontResponse {
  /** A string in events ("200"); CloudFront also accepts a number in a generated response. */
  status: string
  statusDescription?: string
  headers: CloudFrontHeaders
}

/** An answer a function generates instead of passing the request on. */
export interface CloudFrontGeneratedResponse extends CloudFrontResponse {
  body?: string
  bodyEncoding?: 'text' | 'base64'
}

export interface CloudFrontRequestEvent {
  Records: [{ cf: { config: CloudFrontConfig; request: CloudFrontRequest } }]
}

export interface CloudFrontResponseEvent {
  Records: [{ cf: { config: CloudFrontConfig; request: CloudFrontRequest; response: CloudFrontResponse } }]
}

/** What a viewer-request function returns: the request to pass on, or a response of its own. */
export type CloudFrontRequestResult = CloudFrontRequest | CloudFrontGeneratedResponse

const SPECIAL_CASE: Readonly<Record<string, string>> = {
  'www-authenticate': 'WWW-Authenticate',
  'x-xss-protection': 'X-XSS-Protection',
}

/** `content-security-policy` → `Content-Security-Policy`, for the `key` of a header entry. */
export function headerKey(name: string): string {
  return (
    SPECIAL_CASE[name] ??
    name.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase())
  )
}

/**
 * A header's value as one string, or undefined. Repeated entries are joined the way HTTP joins them;
 * `cookie` with `; ` (HTTP/2 viewers send each cookie as its own field, RFC 9113 §8.2.3).
 */
export function headerValue(headers: CloudFrontHeaders, name: string): string | undefined {
  const entries = headers[name]
  if (entries === undefined || entries.length === 0) return undefined
  if (entries.length === 1) return entries[0]!.value
  return entries.map((e) => e.value).join(name === 'cookie' ? '; ' : ', ')
}

const REASONS: Readonly<Record<number, string>> = {
  200: 'OK',
  202: 'Accepted',
  302: 'Found',
  303: 'See Other',
  307: 'Temporary Redirect',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
}

/** A generated response in CloudFront's shape; `setCookies` become one `set-cookie` entry each. */
export function generatedResponse(
  status: number,
  headers: Readonly<Record<string, string>>,
  setCookies: readonly string[],
  body: string,
): CloudFrontGeneratedResponse {
  const out: CloudFrontHeaders = {}
  for (const [name, value] of Object.entries(headers)) out[name] = [{ key: headerKey(name), value }]
  if (setCookies.length > 0) out['set-cookie'] = setCookies.map((value) => ({ key: 'Set-Cookie', value }))
  const response: CloudFrontGeneratedResponse = {
    status: String(status),
    statusDescription: REASONS[status] ?? 'Unknown',
    headers: out,
  }
  if (body !== '') {
    response.body = body
    response.bodyEncoding = 'text'
  }
  return response
}

/** Adds each `[lower-case name, value]` the response does not already carry (the app's own CSP wins). */
export function addMissingHeaders(
  headers: CloudFrontHeaders,
  list: ReadonlyArray<readonly [string, string]>,
): void {
  for (const [name, value] of list) {
    if (headers[name] === undefined || headers[name].length === 0) {
      headers[name] = [{ key: headerKey(name), value }]
    }
  }
}

/** The first record's `cf`, or a TypeError naming what is missing (a misconfigured trigger, not a client). */
export function recordOf<E extends CloudFrontRequestEvent | CloudFrontResponseEvent>(
  event: E,
): E['Records'][0]['cf'] {
  const cf = (event as { Records?: Array<{ cf?: unknown }> })?.Records?.[0]?.cf as
    | E['Records'][0]['cf']
    | undefined
  if (cf === undefined || typeof cf.config?.eventType !== 'string' || typeof cf.request?.uri !== 'string') {
    throw new TypeError('expected a CloudFront Lambda@Edge event (Records[0].cf.config and .request)')
  }
  return cf
}
