import { formatDuration } from '../config/duration.ts'
import { ConfigError } from '../config/errors.ts'
import type { Logger } from '../core/ports.ts'
import type { AlertRecord, AlertStore } from '../store/ports.ts'
import { assess, type ExpiryEntry, formatRemaining, iso } from './inventory.ts'
import { webhookUrlProblem } from './webhook-url.ts'

export interface AlertWebhook {
  /**
   * May carry a secret (Slack's do): it is never logged, and neither is any error message that could
   * quote it. https only (plain http on loopback); no user:password.
   */
  url: string
  /** `json`: Gatehouse's own body; `slack`: `{ "text": … }`, accepted by Slack and most chat webhooks. */
  format: 'json' | 'slack'
}

export interface AlerterOptions {
  store: AlertStore
  /** Seconds before expiry, e.g. 30, 7 and 1 days. An expired credential is one more threshold (0). */
  thresholdsSeconds: readonly number[]
  /** Without one, alerts are written to the log (once each, all the same). */
  webhook?: AlertWebhook | undefined
  fetch?: typeof fetch
  log: Logger
  /** Default 10 000. */
  timeoutMs?: number
}

export interface AlertOutcome {
  credential: string
  thresholdSeconds: number
  result: 'sent' | 'logged' | 'failed'
  error?: string
}

export interface Alerter {
  /**
   * Sends what is due for these entries at `now`: for each credential, one alert for the tightest
   * threshold it has crossed and that was not sent yet (wider ones crossed at the same time are marked
   * sent with it). A failed send is recorded and tried again later with backoff; a renewed credential
   * (another expiry, or back outside every threshold) re-arms its thresholds.
   */
  check(entries: readonly ExpiryEntry[], now: number): Promise<AlertOutcome[]>
}

/** Why a send failed, in words fixed here: safe to record and log (the URL may carry a secret). */
class WebhookFailure extends Error {
  override readonly name = 'WebhookFailure'
}

/** The class of an error (`TypeError`, `AbortError`…), never its message. */
function errorName(err: unknown): string {
  const name = err instanceof Error ? err.name : typeof err
  return /^[A-Za-z][A-Za-z0-9_]{0,40}$/.test(name) ? name : 'Error'
}

/** Seconds before a failed send is tried again: 1 min, 2, 4… up to 1 h. */
export function retryDelaySeconds(attempts: number): number {
  return Math.min(3600, 60 * 2 ** Math.max(0, attempts - 1))
}

function thresholdLabel(t: number): string {
  return t === 0 ? 'expired' : formatDuration(t)
}

/** One line a person reads in a chat channel or a log. */
export function alertText(entry: ExpiryEntry, thresholdSeconds: number, now: number): string {
  const expiresAt = entry.expiresAt
  const when =
    expiresAt === undefined
      ? 'has no known expiry'
      : expiresAt <= now
        ? `EXPIRED ${formatRemaining(now - expiresAt)} ago (${iso(expiresAt)})`
        : `expires in ${formatRemaining(expiresAt - now)} (${iso(expiresAt)})`
  const overdue = assess(entry, now, 0) === 'overdue' ? ' Its automatic renewal is overdue.' : ''
  const crossed = thresholdSeconds === 0 ? '' : ` [threshold ${thresholdLabel(thresholdSeconds)}]`
  return `Gatehouse: ${entry.kind.replaceAll('_', ' ')} "${entry.name}" (owner: ${entry.owner}) ${when}${crossed}.${overdue} ${entry.detail}. Seen at: ${entry.where}.`
}

function body(format: AlertWebhook['format'], entry: ExpiryEntry, thresholdSeconds: number, now: number) {
  const text = alertText(entry, thresholdSeconds, now)
  if (format === 'slack') {
    // Slack's mrkdwn: &, < and > are control characters and must be escaped.
    return { text: text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;') }
  }
  return {
    type: 'gatehouse.credential_expiry',
    status:
      entry.expiresAt !== undefined && entry.expiresAt <= now
        ? 'expired'
        : assess(entry, now, 0) === 'overdue'
          ? 'overdue'
          : 'expiring',
    threshold: thresholdLabel(thresholdSeconds),
    threshold_seconds: thresholdSeconds,
    credential: {
      id: entry.id,
      kind: entry.kind,
      name: entry.name,
      owner: entry.owner,
      where: entry.where,
      expires_at: entry.expiresAt === undefined ? null : iso(entry.expiresAt),
      expires_in_seconds: entry.expiresAt === undefined ? null : entry.expiresAt - now,
      detail: entry.detail,
    },
    text,
    sent_at: iso(now),
  }
}

/** The thresholds (seconds, `0` for expired) an entry has crossed at `now`, tightest first. */
export function crossedThresholds(
  entry: ExpiryEntry,
  now: number,
  thresholdsSeconds: readonly number[],
): number[] {
  if (entry.expiresAt === undefined) return []
  const status = assess(entry, now, Math.max(...thresholdsSeconds))
  // What Gatehouse renews itself is news only when the renewal is overdue or it expired anyway.
  if (entry.renewal === 'automatic' && status !== 'overdue' && status !== 'expired') return []
  const remaining = entry.expiresAt - now
  // Overdue is not expired (a stalled rotation still has a key that signs): the thresholds it is inside, at least the widest.
  const candidates = status === 'overdue' ? thresholdsSeconds : [0, ...thresholdsSeconds]
  const crossed = candidates.filter((t) => remaining <= t).sort((a, b) => a - b)
  if (crossed.length === 0 && status === 'overdue') return [Math.max(...thresholdsSeconds)]
  return crossed
}

export function createAlerter(options: AlerterOptions): Alerter {
  const { store, log } = options
  const thresholds = [...new Set(options.thresholdsSeconds)].sort((a, b) => b - a)
  if (thresholds.length === 0 || thresholds.some((t) => !Number.isInteger(t) || t <= 0)) {
    throw new TypeError('alerts: thresholdsSeconds must be positive whole seconds, at least one')
  }
  if (options.webhook !== undefined) {
    // A URL from { env } / { file } is seen here first: the same rule as one written inline, and the
    // message names the setting, never the value.
    const problem = webhookUrlProblem(options.webhook.url)
    if (problem !== undefined) throw new ConfigError('config', [{ path: 'alerts.webhook', message: problem }])
  }
  const fetchImpl = options.fetch ?? fetch
  const timeoutMs = options.timeoutMs ?? 10_000

  async function send(entry: ExpiryEntry, threshold: number, now: number): Promise<void> {
    const webhook = options.webhook
    if (webhook === undefined) {
      log.warn(
        { event: 'credential_expiry_alert', credential: entry.id, threshold: thresholdLabel(threshold) },
        alertText(entry, threshold, now),
      )
      return
    }
    let response: Response
    try {
      response = await fetchImpl(webhook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body(webhook.format, entry, threshold, now)),
        signal: AbortSignal.timeout(timeoutMs),
        // A redirect would carry the alert (and the secret path) wherever the answer points.
        redirect: 'manual',
      })
    } catch (err) {
      // fetch's messages quote the URL (and so its secret): only a fixed description is kept.
      throw new WebhookFailure(
        (err as Error).name === 'TimeoutError'
          ? 'webhook timed out'
          : `webhook unreachable (${errorName(err)})`,
      )
    }
    await response.body?.cancel().catch(() => {})
    if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status <= 399)) {
      throw new WebhookFailure(`webhook answered with a redirect (HTTP ${response.status}), not followed`)
    }
    if (response.status < 200 || response.status > 299)
      throw new WebhookFailure(`webhook answered HTTP ${response.status}`)
  }

  return {
    async check(entries, now) {
      const outcomes: AlertOutcome[] = []
      const records = new Map<string, AlertRecord[]>()
      for (const r of await store.listAlerts()) {
        const list = records.get(r.credential) ?? []
        list.push(r)
        records.set(r.credential, list)
      }
      for (const entry of entries) {
        const key = entry.alertKey ?? entry.id
        const crossed = crossedThresholds(entry, now, thresholds)
        let mine = records.get(key) ?? []
        // Renewed: outside every threshold again, or another expiry than the one alerted about. An entry
        // whose expiry is unknown right now (an endpoint not reachable) changes nothing. A TLS endpoint's
        // records are kept per certificate (its alertKey), so endpoints behind a load balancer that show
        // an old and a new certificate in turn do not re-arm each other: each certificate alerts once.
        if (
          mine.length > 0 &&
          entry.expiresAt !== undefined &&
          (crossed.length === 0 || mine.some((r) => r.expiresAt !== entry.expiresAt))
        ) {
          await store.deleteAlerts(key)
          log.info(
            { event: 'credential_alerts_rearmed', credential: entry.id },
            'credential renewed; alerts re-armed',
          )
          mine = []
        }
        if (crossed.length === 0 || entry.expiresAt === undefined) continue
        const tightest = crossed[0]!
        const record = mine.find((r) => r.thresholdSeconds === tightest)
        if (record?.sentAt !== undefined) continue
        if (record !== undefined && record.nextAttemptAt > now) continue
        try {
          await send(entry, tightest, now)
        } catch (err) {
          const attempts = (record?.attempts ?? 0) + 1
          // Only our own fixed descriptions are recorded and logged: never a message that may quote the URL.
          const error = err instanceof WebhookFailure ? err.message : `alert not sent (${errorName(err)})`
          await store.putAlert({
            credential: key,
            thresholdSeconds: tightest,
            expiresAt: entry.expiresAt,
            sentAt: undefined,
            attempts,
            nextAttemptAt: now + retryDelaySeconds(attempts),
            lastError: error,
          })
          log.warn(
            {
              event: 'credential_alert_failed',
              credential: entry.id,
              threshold: thresholdLabel(tightest),
              attempts,
              err: error,
            },
            'expiry alert could not be sent; will try again',
          )
          outcomes.push({ credential: entry.id, thresholdSeconds: tightest, result: 'failed', error })
          continue
        }
        for (const t of crossed) {
          if (mine.some((r) => r.thresholdSeconds === t && r.sentAt !== undefined)) continue
          await store.putAlert({
            credential: key,
            thresholdSeconds: t,
            expiresAt: entry.expiresAt,
            sentAt: now,
            attempts: t === tightest ? (record?.attempts ?? 0) : 0,
            nextAttemptAt: now,
            lastError: undefined,
          })
        }
        if (options.webhook !== undefined) {
          log.info(
            { event: 'credential_alert_sent', credential: entry.id, threshold: thresholdLabel(tightest) },
            'expiry alert sent',
          )
        }
        outcomes.push({
          credential: entry.id,
          thresholdSeconds: tightest,
          result: options.webhook === undefined ? 'logged' : 'sent',
        })
      }
      // Records of credentials long gone (a removed key, a replaced certificate) are dropped a month after.
      const present = new Set(entries.map((e) => e.alertKey ?? e.id))
      for (const [credential, list] of records) {
        if (!present.has(credential) && list.every((r) => r.expiresAt < now - 30 * 86_400)) {
          await store.deleteAlerts(credential)
        }
      }
      return outcomes
    },
  }
}
