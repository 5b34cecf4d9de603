import { Counter, Gauge, type Registry } from 'prom-client'
import { formatDuration } from '../config/duration.ts'
import type { Config } from '../config/schema.ts'
import type { Clock } from '../core/clock.ts'
import type { Logger } from '../core/ports.ts'
import type { KeyRing } from '../keys/key-ring.ts'
import { createMemoryStore } from '../store/memory-store.ts'
import type { AlertStore, CacheStore, TokenStore } from '../store/ports.ts'
import { type AlertOutcome, type AlertWebhook, createAlerter } from './alerts.ts'
import { type CollectOptions, collectInventory, type Inventory } from './collect.ts'
import type { TLSObserver } from './tls.ts'

export interface ExpiryMonitorOptions {
  config: Config
  clock: Clock
  log: Logger
  /** Where alert state is kept; a store without it (one that predates Gatehouse 5) gets memory, with a warning. */
  store: CacheStore & TokenStore & Partial<AlertStore>
  keyRing: KeyRing
  sessionSecrets: readonly string[]
  observer: TLSObserver
  webhook?: AlertWebhook | undefined
  /** For the webhook. Default: global fetch. */
  fetch?: typeof fetch
  /** Gauges and the alerts counter are registered here. */
  registry?: Registry
  /** Gatehouse's own certificate as served now, when it terminates TLS. */
  ownTLS?: () => CollectOptions['ownTLS']
  /** Probe TLS endpoints not seen in a handshake for an hour. Default true. */
  probe?: boolean
  /** Trust anchors of the provider's connections (`provider.ca`), for probes of its endpoints. */
  providerCA?: CollectOptions['tls']['providerCA']
  /**
   * Many instances on one store: alerts are checked and sent under this lock, by one instance at a
   * time, so each alert goes out once (the others skip that round; their inventory is still taken).
   */
  alertLock?:
    | { tryRun<T>(task: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> }
    | undefined
}

export interface ExpiryMonitor {
  /**
   * Rotate what Gatehouse owns if due (the key ring's tick), take the inventory, send the alerts that are
   * due. One run at a time: a caller during a run gets that run's result.
   */
  run(): Promise<{ inventory: Inventory; alerts: AlertOutcome[] }>
  /** The last inventory taken, if any. */
  last(): Inventory | undefined
}

function isAlertStore(s: Partial<AlertStore>): s is AlertStore {
  return (
    typeof s.listAlerts === 'function' &&
    typeof s.putAlert === 'function' &&
    typeof s.deleteAlerts === 'function' &&
    typeof s.markSeen === 'function'
  )
}

/**
 * The gateway's side of Gatehouse 5: every `alerts.check_every`, own keys are rotated if due, the
 * inventory is taken and alerts are sent; `/metrics` reads the last inventory at scrape time.
 */
export function createExpiryMonitor(options: ExpiryMonitorOptions): ExpiryMonitor {
  const { config, clock, log } = options
  let alertStore: AlertStore
  if (isAlertStore(options.store)) alertStore = options.store
  else {
    log.warn(
      { event: 'alert_state_in_memory' },
      'this store keeps no alert state: expiry alerts may be sent again after a restart',
    )
    alertStore = createMemoryStore({ clock })
  }
  const alerter = createAlerter({
    store: alertStore,
    thresholdsSeconds: config.alerts.thresholds,
    webhook: options.webhook,
    fetch: options.fetch,
    log,
  })
  const thresholdLabel = (t: number) => (t === 0 ? 'expired' : formatDuration(t))
  const now = () => Math.floor(clock.now() / 1000)
  const warnSeconds = Math.max(...config.alerts.thresholds)
  let last: Inventory | undefined
  let running: Promise<{ inventory: Inventory; alerts: AlertOutcome[] }> | undefined

  let alertsTotal: Counter<'threshold' | 'result'> | undefined
  if (options.registry !== undefined) {
    const registers = [options.registry]
    const labelNames = ['kind', 'name', 'owner'] as const
    new Gauge({
      name: 'gatehouse_credential_expiry_timestamp_seconds',
      help: 'When each credential Gatehouse depends on expires (seconds since the epoch)',
      labelNames,
      registers,
      collect() {
        this.reset()
        for (const e of last?.entries ?? []) {
          if (e.expiresAt !== undefined) this.set({ kind: e.kind, name: e.name, owner: e.owner }, e.expiresAt)
        }
      },
    })
    new Gauge({
      name: 'gatehouse_credential_expiry_seconds_remaining',
      help: 'Seconds until each credential expires (negative once expired), at scrape time',
      labelNames,
      registers,
      collect() {
        this.reset()
        const t = now()
        for (const e of last?.entries ?? []) {
          if (e.expiresAt !== undefined)
            this.set({ kind: e.kind, name: e.name, owner: e.owner }, e.expiresAt - t)
        }
      },
    })
    new Gauge({
      name: 'gatehouse_credential_age_seconds',
      help: 'Age of credentials that only age (cookie secrets), since Gatehouse first saw them',
      labelNames,
      registers,
      collect() {
        this.reset()
        for (const e of last?.entries ?? []) {
          if (e.ageSeconds !== undefined)
            this.set({ kind: e.kind, name: e.name, owner: e.owner }, e.ageSeconds)
        }
      },
    })
    new Gauge({
      name: 'gatehouse_expiry_inventory_timestamp_seconds',
      help: 'When the credential inventory was last taken (0: never)',
      registers,
      collect() {
        this.set(last?.generatedAt ?? 0)
      },
    })
    alertsTotal = new Counter({
      name: 'gatehouse_expiry_alerts_total',
      help: 'Expiry alerts by threshold and result (sent, logged without a webhook, failed)',
      labelNames: ['threshold', 'result'],
      registers,
    })
  }

  async function runOnce() {
    try {
      const changes = await options.keyRing.tick()
      if (changes.length > 0)
        log.info({ event: 'key_ring_tick', changes }, 'signing keys rotated on schedule')
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'key rotation check failed; the inventory will show it')
    }
    const inventory = await collectInventory({
      config,
      now: now(),
      store:
        alertStore === options.store
          ? options.store
          : { ...bind(options.store), markSeen: alertStore.markSeen },
      keys: options.keyRing.list(),
      sessionSecrets: options.sessionSecrets,
      warnSeconds,
      tls: {
        observer: options.observer,
        probe: options.probe ?? true,
        maxAgeSeconds: 3600,
        providerCA: options.providerCA,
      },
      ownTLS: options.ownTLS?.(),
    })
    last = inventory
    let alerts: AlertOutcome[] = []
    if (options.alertLock === undefined) alerts = await alerter.check(inventory.entries, now())
    else {
      try {
        const r = await options.alertLock.tryRun(() => alerter.check(inventory.entries, now()))
        if (r.ran) alerts = r.value
        else log.debug({ event: 'alerts_skipped' }, 'another instance is sending expiry alerts')
      } catch (err) {
        // The store is down: the alert state cannot be read or written, so nothing is sent (and nothing
        // is lost: the next round after it returns sends what is due).
        log.warn({ event: 'alerts_deferred', err: (err as Error).message }, 'expiry alerts deferred')
      }
    }
    for (const a of alerts)
      alertsTotal?.inc({ threshold: thresholdLabel(a.thresholdSeconds), result: a.result })
    return { inventory, alerts }
  }

  return {
    run() {
      running ??= runOnce().finally(() => {
        running = undefined
      })
      return running
    },
    last: () => last,
  }
}

function bind(store: CacheStore & TokenStore): CacheStore & TokenStore {
  return {
    getCached: (k) => store.getCached(k),
    putCached: (k, v, t) => store.putCached(k, v, t),
    insertToken: (t) => store.insertToken(t),
    getToken: (j) => store.getToken(j),
    listTokens: (o) => store.listTokens(o),
    listDescendants: (j) => store.listDescendants(j),
    revokeTokens: (j, a) => store.revokeTokens(j, a),
    listRevoked: (n) => store.listRevoked(n),
  }
}
