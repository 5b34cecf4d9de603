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

/** Every `x-auth-request-*`, `x-gatehouse-*` and `x-forwarded-*` header is Gatehouse's to set, never the client's. */
export function isGatewayOwned(name: string): boolean {
  return (
    name.charCodeAt(0) === 120 /* x */ &&
    name.charCodeAt(1) === 45 /* - */ &&
    (name.startsWith('x-auth-request-') || name.startsWith('x-gatehouse-') || name.startsWith('x-forwarded-'))
  )
}
