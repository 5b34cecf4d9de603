/**
 * Which headers a proxy never passes on, shared by every adapter (no Node API, so the fetch adapter
 * can use it too).
 */

/** RFC 9110 §7.6.1: hop-by-hop fields, plus the legacy ones still seen in the wild. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/**
 * A header name as the upstream may read it: lower case, and `_` read as `-`. CGI, WSGI and Rack turn
 * both `-` and `_` into `_` (`HTTP_X_AUTH_REQUEST_USER`), so `X_Auth_Request_User` is the same field
 * as `X-Auth-Request-User` to a Django, Flask or PHP app.
 */
export function upstreamHeaderName(name: string): string {
  return NEEDS_MAPPING.test(name) ? name.toLowerCase().replace(/_/g, '-') : name
}
const NEEDS_MAPPING = /[_A-Z]/

/**
 * Headers only Gatehouse (or the proxy in front of the upstream) sets, never taken from the client: every
 * `x-auth-request-*`, `x-gatehouse-*` and `x-forwarded-*` header, `forwarded` and `x-real-ip`. A client can
 * send any of them to pose as a signed-in user (`x-forwarded-user`, `x-auth-request-email`…) or as a proxy
 * (`x-forwarded-host`, `forwarded: host=…`, `x-real-ip`), so every adapter drops a client's copy on every
 * route, anonymous ones included (docs/security.md). `proxy` is dropped too (httpoxy). Names are compared as the upstream may read them
 * ({@link upstreamHeaderName}): `X_Auth_Request_User` and `x-auth_request-user` are gateway-owned too.
 */
export function isGatewayOwned(header: string): boolean {
  const name = upstreamHeaderName(header)
  // `Proxy` is no standard field, but CGI turns it into HTTP_PROXY, the proxy the upstream's own HTTP
  // client then uses (httpoxy, CVE-2016-5385): never passed on.
  if (name.charCodeAt(0) !== 120 /* x */) return name === 'forwarded' || name === 'proxy'
  return (
    name.charCodeAt(1) === 45 /* - */ &&
    (name.startsWith('x-auth-request-') ||
      name.startsWith('x-gatehouse-') ||
      name.startsWith('x-forwarded-') ||
      name === 'x-real-ip')
  )
}

/** A hop-by-hop field (RFC 9110 §7.6.1), also when spelled with `_` or in capitals (`Transfer_Encoding`). */
export function isHopByHop(header: string): boolean {
  return HOP_BY_HOP.has(upstreamHeaderName(header))
}
