/**
 * The rule for the alert webhook URL, shared by the config schema (a URL written inline) and the alerter
 * (a URL read from `{ env }` / `{ file }` at start). No Node API: the config schema runs on the edge too.
 * Its messages never quote the URL, which may carry a secret (Slack's do).
 */

/** Host names that are this machine: plain http is allowed there (tests, a local relay). */
function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '')
  if (h === 'localhost' || h.endsWith('.localhost')) return true
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true
  // WHATWG URL parsing has already normalised IPv4 forms (`127.1`, `0x7f.0.0.1`) to dotted decimal.
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
}

/** Why this URL cannot be the alert webhook, or undefined when it can. */
export function webhookUrlProblem(value: string): string | undefined {
  let u: URL
  try {
    u = new URL(value)
  } catch {
    return 'expected an https:// URL'
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopback(u.hostname))) {
    return 'expected an https:// URL (plain http only on loopback)'
  }
  if (u.username !== '' || u.password !== '') {
    return 'expected a URL without user:password in it'
  }
  return undefined
}
