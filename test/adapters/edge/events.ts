/**
 * CloudFront Lambda@Edge events in the documented shapes (AWS CloudFront Developer Guide, "Lambda@Edge
 * event structure": example viewer request and origin response), built per test. The only stand-in
 * for a real part in these tests: a CDN cannot run here.
 */
import assert from 'node:assert/strict'
import type {
  CloudFrontGeneratedResponse,
  CloudFrontHeaders,
  CloudFrontRequest,
  CloudFrontRequestEvent,
  CloudFrontRequestResult,
  CloudFrontResponseEvent,
} from '../../../src/adapters/edge/cloudfront.ts'

export const DOMAIN = 'app.example.com'

const config = (eventType: string) => ({
  distributionDomainName: 'd111111abcdef8.cloudfront.net',
  distributionId: 'EDFDVBD6EXAMPLE',
  eventType,
  requestId: '4TyzHTaYWb1GX1qTfsHhEqV6HUDd_BzoBZnwfnvQc_1oF26ClkoUSEQ==',
})

/** `{ 'user-agent': 'x' }` → CloudFront's `{ 'user-agent': [{ key: 'User-Agent', value: 'x' }] }`; arrays give repeated fields. */
export function cfHeaders(headers: Record<string, string | string[] | undefined>): CloudFrontHeaders {
  const out: CloudFrontHeaders = {}
  for (const [name, v] of Object.entries(headers)) {
    if (v === undefined) continue
    const key = name.replace(/(^|-)([a-z])/g, (_, d: string, c: string) => d + c.toUpperCase())
    out[name] = (Array.isArray(v) ? v : [v]).map((value) => ({ key, value }))
  }
  return out
}

/** A viewer-request event for `target` (path and query), as a browser navigation unless headers say otherwise. */
export function viewerRequest(
  target: string,
  options: {
    method?: string
    headers?: Record<string, string | string[] | undefined>
    eventType?: string
  } = {},
): CloudFrontRequestEvent {
  const q = target.indexOf('?')
  return {
    Records: [
      {
        cf: {
          config: config(options.eventType ?? 'viewer-request'),
          request: {
            clientIp: '203.0.113.178',
            headers: cfHeaders({ host: DOMAIN, 'user-agent': 'Mozilla/5.0 (test)', ...options.headers }),
            method: options.method ?? 'GET',
            querystring: q === -1 ? '' : target.slice(q + 1),
            uri: q === -1 ? target : target.slice(0, q),
          },
        },
      },
    ],
  } as CloudFrontRequestEvent
}

export const NAVIGATE = { accept: 'text/html,application/xhtml+xml', 'sec-fetch-mode': 'navigate' } as const

export function originResponse(
  status: string,
  headers: Record<string, string | string[] | undefined>,
  eventType = 'origin-response',
): CloudFrontResponseEvent {
  const request = viewerRequest('/').Records[0].cf.request
  return {
    Records: [
      {
        cf: {
          config: config(eventType),
          request,
          response: {
            status,
            statusDescription: status === '200' ? 'OK' : 'Other',
            headers: cfHeaders(headers),
          },
        },
      },
    ],
  } as CloudFrontResponseEvent
}

/** The generated response, or a failed assertion when the request was passed on. */
export function generated(result: CloudFrontRequestResult): CloudFrontGeneratedResponse {
  assert.ok(
    'status' in result,
    `expected a generated response, got the request passed on to ${'uri' in result ? result.uri : '?'}`,
  )
  return result
}

/** The request passed on to the origin, or a failed assertion with the response's status and body. */
export function passedOn(result: CloudFrontRequestResult): CloudFrontRequest {
  assert.ok(
    !('status' in result),
    `expected the request to pass, got ${'status' in result ? `${result.status} ${result.headers['location']?.[0]?.value ?? result.body}` : ''}`,
  )
  return result
}

export function header(h: CloudFrontHeaders, name: string): string | undefined {
  return h[name]?.[0]?.value
}

export function setCookies(r: CloudFrontGeneratedResponse): string[] {
  return (r.headers['set-cookie'] ?? []).map((e) => e.value)
}

/** A browser's cookie jar for one host, fed by generated responses. */
export function createJar() {
  const cookies = new Map<string, string>()
  return {
    cookies,
    take(r: CloudFrontGeneratedResponse) {
      for (const c of setCookies(r)) {
        const [pair = '', ...attrs] = c.split(';')
        const eq = pair.indexOf('=')
        const name = pair.slice(0, eq).trim()
        if (attrs.some((a) => /^\s*max-age=0\s*$/i.test(a))) cookies.delete(name)
        else cookies.set(name, pair.slice(eq + 1))
      }
    },
    header(): string | undefined {
      if (cookies.size === 0) return undefined
      return [...cookies].map(([n, v]) => `${n}=${v}`).join('; ')
    },
  }
}
