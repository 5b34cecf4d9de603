import { createHash } from 'node:crypto'
import { formatDuration } from '../config/duration.ts'
import type { EffectiveLifetime } from '../config/lifetimes.ts'
import type { Inventory } from '../expiry/collect.ts'
import {
  assess,
  type ExpiryEntry,
  type ExpiryStatus,
  formatRemaining,
  iso,
  needsAttention,
} from '../expiry/inventory.ts'
import type { KeyInfo } from '../keys/key-ring.ts'
import type { CopyStatus } from '../keys/provider-cache.ts'
import type { GuardStatus } from '../oidc/guarded-fetch.ts'
import type { Offender } from './offenders.ts'

/** Everything `/status` shows; gathered by the gateway, rendered here without I/O. */
export interface StatusPageData {
  now: number
  inventory: Inventory | undefined
  /** Entries expiring within this are marked as warnings (the widest alert threshold). */
  warnSeconds: number
  thresholdsSeconds: readonly number[]
  provider: {
    issuer: string
    state: string
    lastError: string | undefined
    breaker: GuardStatus
    discovery: CopyStatus
    jwks: CopyStatus
  }
  /** With a config `providers` list: each one (`provider` is then the first), named. */
  providers?: ReadonlyArray<StatusPageData['provider'] & { name: string }> | undefined
  keys: readonly KeyInfo[]
  /** Where the shared state lives and whether it answers (Gatehouse 6). */
  store?: StoreState | undefined
  offenders: readonly Offender[]
  lifetimes: readonly EffectiveLifetime[]
  /** The running config: its file's sha256, when it was loaded, keys waiting for a restart (src/reload.ts). */
  config?: { hash: string; loadedAt: number; restartPending: readonly string[] } | undefined
}

export interface StoreState {
  durable: 'sqlite' | 'postgres'
  /** `ok`, or what Gatehouse does instead while the durable store is not reached. */
  durableState: string
  /** `off` (not configured), `up`, or `down` (and what falls back). */
  redis: string
}

/** Escapes text for HTML element content and quoted attribute values (and SVG, which is XML). */
export function escapeHTML(value: unknown): string {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;')
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2937;background:#f8fafc}
header{background:#111827;color:#f9fafb;padding:14px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#d1d5db}
main{padding:8px 24px 24px;max-width:1200px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;margin:16px 0;padding:12px 16px}
h2{font-size:16px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #f1f5f9;vertical-align:top}
th{font-weight:600;color:#4b5563;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.s-expired{background:#b91c1c}.s-overdue{background:#c2410c}.s-warning{background:#d97706}
.s-ok{background:#15803d}.s-automatic{background:#2563eb}.s-unknown{background:#6b7280}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:#4b5563}dd{margin:0}
svg{display:block;max-width:100%;height:auto}
.muted{color:#6b7280}
footer{padding:0 24px 24px;color:#6b7280}
`

/**
 * `Content-Security-Policy` of the page: nothing runs, nothing loads; only the page's own stylesheet
 * (pinned by its hash) applies.
 */
export const STATUS_PAGE_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(CSS).digest('base64')}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`

const COLORS: Record<ExpiryStatus, string> = {
  expired: '#b91c1c',
  overdue: '#c2410c',
  warning: '#d97706',
  ok: '#15803d',
  automatic: '#2563eb',
  unknown: '#6b7280',
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

/**
 * The expiry timeline: one row per credential with a known expiry, from now to a horizon of at least
 * 90 days (twice the widest threshold when wider); later ones sit at the right edge with an arrow,
 * expired ones at the left. The soonest one not renewed on schedule by Gatehouse is ringed and named
 * (`id="soonest"`).
 */
export function renderTimeline(
  entries: readonly ExpiryEntry[],
  now: number,
  warnSeconds: number,
  thresholdsSeconds: readonly number[],
): string {
  const dated = entries.filter((e) => e.expiresAt !== undefined).slice(0, 40)
  if (dated.length === 0) return '<p class="muted">No credential with a known expiry yet.</p>'
  const horizon = Math.max(90 * 86_400, 2 * Math.max(...thresholdsSeconds))
  const labelW = 300
  const x0 = labelW + 40
  const x1 = 940
  const top = 56
  const rowH = 20
  const height = top + dated.length * rowH + 16
  const x = (t: number) => {
    const d = t - now
    if (d <= 0) return labelW + 14
    return x0 + (Math.min(d, horizon) / horizon) * (x1 - x0)
  }
  // What a person must act on first: renewals Gatehouse makes on schedule are not it.
  const soonest = dated.find((e) => assess(e, now, warnSeconds) !== 'automatic') ?? dated[0]!
  const parts: string[] = []
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 960 ${height}" width="960" height="${height}" role="img" aria-labelledby="timeline-title">`,
    `<title id="timeline-title">Credential expiry timeline, soonest: ${escapeHTML(soonest.name)}</title>`,
    `<rect x="0" y="0" width="960" height="${height}" fill="#ffffff"/>`,
    `<line x1="${x0}" y1="${top - 10}" x2="${x1}" y2="${top - 10}" stroke="#9ca3af"/>`,
    `<text x="${x0}" y="${top - 16}" font-size="11" fill="#374151" text-anchor="middle">now</text>`,
    `<text x="${labelW + 24}" y="${top - 16}" font-size="11" fill="#b91c1c" text-anchor="end">expired</text>`,
    `<text x="${x1}" y="${top - 16}" font-size="11" fill="#374151" text-anchor="end">${escapeHTML(formatDuration(horizon))}+</text>`,
  )
  for (const t of [...thresholdsSeconds].sort((a, b) => a - b)) {
    const tx = x(now + t).toFixed(1)
    parts.push(
      `<line x1="${tx}" y1="${top - 10}" x2="${tx}" y2="${height - 8}" stroke="${t <= warnSeconds ? '#f59e0b' : '#d1d5db'}" stroke-dasharray="3 3"/>`,
      `<text x="${tx}" y="${top - 30}" font-size="11" fill="#92400e" text-anchor="middle">${escapeHTML(formatDuration(t))}</text>`,
    )
  }
  dated.forEach((e, i) => {
    const y = top + i * rowH + 10
    const status = assess(e, now, warnSeconds)
    const cx = x(e.expiresAt!).toFixed(1)
    const late = e.expiresAt! - now > horizon
    const when =
      e.expiresAt! <= now
        ? `expired ${formatRemaining(now - e.expiresAt!)} ago`
        : `in ${formatRemaining(e.expiresAt! - now)}`
    const label = `${e.kind.replaceAll('_', ' ')}: ${e.name}`
    const tip = `${label} (${e.owner}) ${when}, ${iso(e.expiresAt!)}`
    const isSoonest = e === soonest
    parts.push(
      `<g${isSoonest ? ' id="soonest"' : ''} class="row"><title>${escapeHTML(tip)}</title>`,
      `<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#f1f5f9"/>`,
      `<text x="${labelW}" y="${y + 4}" font-size="12" fill="#111827" text-anchor="end">${escapeHTML(clip(label, 44))}</text>`,
      `<circle cx="${cx}" cy="${y}" r="${isSoonest ? 6 : 5}" fill="${COLORS[status]}"/>`,
    )
    if (isSoonest) {
      parts.push(
        `<circle cx="${cx}" cy="${y}" r="10" fill="none" stroke="#b91c1c" stroke-width="2"/>`,
        `<text x="${Number(cx) + 14 > x1 - 200 ? Number(cx) - 14 : Number(cx) + 14}" y="${y + 4}" font-size="12" font-weight="700" fill="#b91c1c" text-anchor="${Number(cx) + 14 > x1 - 200 ? 'end' : 'start'}">soonest: ${escapeHTML(clip(e.name, 40))} ${escapeHTML(when)}</text>`,
      )
    } else if (late) {
      parts.push(
        `<text x="${x1 - 10}" y="${y + 4}" font-size="11" fill="#6b7280" text-anchor="end">${escapeHTML(when)} →</text>`,
      )
    }
    parts.push('</g>')
  })
  parts.push('</svg>')
  return parts.join('')
}

function table(head: readonly string[], rows: readonly (readonly string[])[], id: string): string {
  const th = head.map((h) => `<th>${escapeHTML(h)}</th>`).join('')
  // Cells arrive escaped (some carry markup of our own, such as a status badge).
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('')
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`
}

const badge = (status: string) => `<span class="badge s-${escapeHTML(status)}">${escapeHTML(status)}</span>`

/** The whole `/status` page: server-rendered, no JavaScript, every value escaped. */
export function renderStatusPage(d: StatusPageData): string {
  const entries = d.inventory?.entries ?? []
  const statuses = entries.map((e) => assess(e, d.now, d.warnSeconds))
  const attention = statuses.filter(needsAttention).length
  const inventoryRows = entries.map((e, i) => [
    badge(statuses[i]!),
    `<span class="num">${e.expiresAt === undefined ? '–' : escapeHTML(iso(e.expiresAt))}</span>`,
    e.expiresAt === undefined
      ? e.ageSeconds === undefined
        ? '–'
        : `${escapeHTML(formatRemaining(e.ageSeconds))} old`
      : escapeHTML(formatRemaining(e.expiresAt - d.now)),
    escapeHTML(e.kind),
    escapeHTML(e.owner),
    escapeHTML(e.name),
    `${escapeHTML(e.detail)}<br><span class="muted">${escapeHTML(e.where)}</span>`,
  ])
  const copy = (c: CopyStatus) =>
    c.ageSeconds === undefined
      ? 'none'
      : `${escapeHTML(formatRemaining(c.ageSeconds))} old (${escapeHTML(c.source)})`
  const providerSection = (
    p: StatusPageData['provider'],
    name?: string,
  ) => `<section id="${name === undefined ? 'provider' : `provider-${escapeHTML(name)}`}"><h2>Identity provider${name === undefined ? '' : ` ${escapeHTML(name)}`}</h2><dl>
<dt>issuer</dt><dd>${escapeHTML(p.issuer)}</dd>
<dt>state</dt><dd>${badge(p.state === 'ok' ? 'ok' : p.state === 'degraded' ? 'warning' : 'unknown').replace(/>[a-z]+</, `>${escapeHTML(p.state)}<`)}</dd>
<dt>last error</dt><dd>${p.lastError === undefined ? 'none' : escapeHTML(p.lastError)}</dd>
<dt>breaker</dt><dd>${escapeHTML(p.breaker.state)}, ${escapeHTML(p.breaker.inFlight)} in flight, ${escapeHTML(p.breaker.queued)} waiting, ${escapeHTML(p.breaker.consecutiveFailures)} failures in a row, ${escapeHTML(p.breaker.shortCircuited)} short-circuited</dd>
<dt>discovery copy</dt><dd>${copy(p.discovery)}</dd>
<dt>JWKS copy</dt><dd>${copy(p.jwks)}</dd>
</dl></section>`
  const providerSections =
    d.providers === undefined
      ? providerSection(d.provider)
      : d.providers.map((p) => providerSection(p, p.name)).join('\n')
  const keyRows = d.keys.map((k) => [
    escapeHTML(k.kid),
    escapeHTML(k.alg),
    badge(k.state === 'current' ? 'ok' : k.state === 'next' ? 'automatic' : 'unknown').replace(
      />[a-z]+</,
      `>${escapeHTML(k.state)}<`,
    ),
    escapeHTML(iso(k.activatesAt)),
    escapeHTML(iso(k.retiresAt)),
    escapeHTML(iso(k.removeAt)),
  ])
  const offenderRows = d.offenders.map((o) => [
    escapeHTML(o.clientAddress),
    escapeHTML(o.code),
    `<span class="num">${escapeHTML(o.count)}</span>`,
    escapeHTML(o.userAgent),
    escapeHTML(o.lastSeen),
  ])
  const lifetimeRows = d.lifetimes.map((r) => [
    escapeHTML(r.class),
    escapeHTML(formatDuration(r.ttlSeconds)),
    escapeHTML(formatDuration(r.maxTtlSeconds)),
    escapeHTML(formatDuration(r.effectiveMaxSeconds)),
    r.cappedBy === undefined ? '' : `capped by ${escapeHTML(r.cappedBy)}`,
  ])
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60"><title>Gatehouse status</title><style>${CSS}</style></head>
<body><header><h1>Gatehouse status</h1><p>Generated ${escapeHTML(iso(d.now))} · inventory ${d.inventory === undefined ? 'not taken yet' : `taken ${escapeHTML(iso(d.inventory.generatedAt))}`} · ${attention === 0 ? 'nothing needs attention' : `<span class="badge s-warning" id="attention">${attention} need${attention === 1 ? 's' : ''} attention</span>`}</p></header>
<main>
<section id="expiry"><h2>Expiry timeline</h2>${renderTimeline(entries, d.now, d.warnSeconds, d.thresholdsSeconds)}</section>
<section><h2>Credentials (soonest first; warning within ${escapeHTML(formatDuration(d.warnSeconds))})</h2>${entries.length === 0 ? '<p class="muted">No inventory yet.</p>' : table(['status', 'expires', 'in', 'kind', 'owner', 'name', 'detail'], inventoryRows, 'inventory')}</section>
${providerSections}
${
  d.store === undefined
    ? ''
    : `<section id="store"><h2>Shared state</h2><dl>
<dt>durable store</dt><dd>${escapeHTML(d.store.durable)}: ${escapeHTML(d.store.durableState)}</dd>
<dt>Redis</dt><dd>${escapeHTML(d.store.redis)}</dd>
</dl></section>`
}
${
  d.config === undefined
    ? ''
    : `<section id="config"><h2>Config</h2><dl>
<dt>loaded</dt><dd>${escapeHTML(iso(d.config.loadedAt))}, sha256 <code>${escapeHTML(d.config.hash.slice(0, 16))}</code></dd>
<dt>waiting for a restart</dt><dd>${d.config.restartPending.length === 0 ? 'nothing' : escapeHTML(d.config.restartPending.join(', '))}</dd>
</dl></section>`
}
<section id="keys"><h2>Signing keys</h2>${keyRows.length === 0 ? '<p class="muted">none</p>' : table(['kid', 'alg', 'state', 'signs from', 'signs until', 'published until'], keyRows, 'key-table')}</section>
<section id="offenders"><h2>Recent rate-limit offenders</h2>${offenderRows.length === 0 ? '<p class="muted">none</p>' : table(['client', 'reason', 'count', 'user agent', 'last seen'], offenderRows, 'offender-table')}</section>
<section id="lifetimes"><h2>Effective lifetimes</h2>${table(['class', 'ttl', 'max_ttl', 'effective max', 'notes'], lifetimeRows, 'lifetime-table')}</section>
</main>
<footer>Also as <a href="/status.json">/status.json</a> and <a href="/metrics">/metrics</a>. Refreshes every minute.</footer>
</body></html>
`
}
