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
 * Headers only Gatehouse (or the proxy in front of the upstream) sets, never taken from the client: every
 * `x-auth-request-*`, `x-gatehouse-*` and `x-forwarded-*` header, `forwarded` and `x-real-ip`. A client can
 * send any of them to pose as a signed-in user (`x-forwarded-user`, `x-auth-request-email`…) or as a proxy
 * (`x-forwarded-host`, `forwarded: host=…`, `x-real-ip`), so every adapter drops a client's copy on every
 * route, anonymous ones included (docs/security.md). `name` is lower case.
 */
export function isGatewayOwned(name: string): boolean {
  if (name.charCodeAt(0) !== 120 /* x */) return name === 'forwarded'
  return (
    name.charCodeAt(1) === 45 /* - */ &&
    (name.startsWith('x-auth-request-') ||
      name.startsWith('x-gatehouse-') ||
      name.startsWith('x-forwarded-') ||
      name === 'x-real-ip')
  )
}
