import { z } from 'zod'
import { isGatewayOwned, isHopByHop } from '../adapters/header-rules.ts'
import { normalizePathPrefix, underPrefix } from '../core/apps.ts'
import { webhookUrlProblem } from '../expiry/webhook-url.ts'
import { parseDurationSeconds } from './duration.ts'

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const s = parseDurationSeconds(v)
  if (s === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration such as 90s, 10m, 12h or 7d, got ${JSON.stringify(v)}`,
    })
    return z.NEVER
  }
  return s
})

/** A duration in milliseconds: `300ms`, or a duration as above (`10s`, `2m`; a bare number is seconds). */
const durationMs = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = typeof v === 'string' ? /^(\d{1,9})\s*ms$/.exec(v.trim()) : null
  if (ms !== null) return Number(ms[1])
  const s = parseDurationSeconds(v)
  if (s === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration such as 500ms, 10s or 2m, got ${JSON.stringify(v)}`,
    })
    return z.NEVER
  }
  return s * 1000
})

/** Host names a port answers for besides its own: `app.example.com`, or `.example.com` for a whole domain. */
const hostNames = z
  .array(
    z
      .string()
      .regex(
        /^\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
        'expected a host name without scheme or port, e.g. app.example.com, or .example.com for a domain',
      ),
  )
  .default([])

// Fields a claim must not stand in for: what routes the request, carries credentials or frames the body.
const NOT_CLAIM_HEADERS = new Set([
  'host',
  'cookie',
  'authorization',
  'content-length',
  'content-type',
  'content-encoding',
  'expect',
])

/**
 * Why a header of identity.headers_from_claims is refused: not an RFC 9110 token (or with `_`, which CGI
 * upstreams read as `-`), one Gatehouse sets itself, hop-by-hop, or a field that routes or frames the request.
 */
function claimHeaderProblem(name: string): string | undefined {
  if (!/^[!#$%&'*+.^`|~0-9A-Za-z-]+$/.test(name))
    return `expected a header name (letters, digits, - …; no _ or spaces), got ${JSON.stringify(name)}`
  if (isGatewayOwned(name))
    return `${name} is a header Gatehouse sets itself (X-Auth-Request-*, X-Gatehouse-*, X-Forwarded-*…): choose another name`
  if (isHopByHop(name) || NOT_CLAIM_HEADERS.has(name.toLowerCase()))
    return `${name} cannot carry a claim: choose another name`
  return undefined
}

const lifetime = z.strictObject({ ttl: duration, max_ttl: duration })
/** private_key_jwt: the signing algorithm of a PEM key (a JWK's own `alg` wins). */
const clientKeyAlg = z.enum(['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA']).default('RS256')
const rate = z.strictObject({ points: z.number().int().min(1), per: duration })

/** A secret is never inline: it comes from an environment variable or a file. */
const secretRef = z.union(
  [z.strictObject({ env: z.string().min(1) }), z.strictObject({ file: z.string().min(1) })],
  { error: 'expected { env: NAME } or { file: PATH } (secrets are never written inline)' },
)

const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' })

/** A service URL inline (no password in it), or a secret reference that holds the whole URL. */
function serviceUrl(protocols: readonly string[]) {
  const inline = z.string().superRefine((v, ctx) => {
    let u: URL
    try {
      u = new URL(v)
    } catch {
      ctx.addIssue({ code: 'custom', message: `expected a ${protocols[0]}:// URL` })
      return
    }
    if (!protocols.includes(u.protocol.slice(0, -1))) {
      ctx.addIssue({ code: 'custom', message: `expected a ${protocols.join(':// or ')}:// URL` })
    } else if (u.password !== '') {
      ctx.addIssue({
        code: 'custom',
        message: 'this URL has a password: give it as { env: NAME } or { file: PATH } instead',
      })
    }
  })
  return z.union([inline, secretRef], {
    error: `expected a ${protocols[0]}:// URL without a password, or { env: NAME } / { file: PATH }`,
  })
}

/** A moment: `2026-06-30` (midnight UTC) or an ISO 8601 date-time; kept as seconds since the epoch. */
const instant = z.union([z.string(), z.date()]).transform((v, ctx) => {
  const text = v instanceof Date ? v.toISOString() : v.trim()
  const ms = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}))?$/.test(text)
    ? Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : text)
    : Number.NaN
  if (!Number.isFinite(ms)) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a date such as 2026-06-30 or 2026-06-30T12:00:00Z, got ${JSON.stringify(v)}`,
    })
    return z.NEVER
  }
  return Math.floor(ms / 1000)
})

const access = z.union(
  [
    z.literal('anonymous'),
    z.literal('authenticated'),
    z.strictObject({
      groups: z.array(z.string().min(1)).default([]),
      emails: z.array(z.string().min(3)).default([]),
      /** Scopes a bearer token must all carry; a browser session has none (403 insufficient_scope). */
      scopes: z
        .array(
          z
            .string()
            .regex(
              /^[\x21\x23-\x5b\x5d-\x7e]+$/,
              'expected a scope token (RFC 6749 §3.3: visible ASCII except space, " and \\)',
            ),
        )
        .min(1, 'expected at least one scope (leave scopes out for none)')
        .optional(),
    }),
  ],
  { error: 'expected "anonymous", "authenticated" or { groups: [...], emails: [...], scopes: [...] }' },
)

/** First match wins; a path no rule names needs a signed-in user (`authenticated`). */
const routeList = z
  .array(
    z.strictObject({
      path: z.string().min(1),
      methods: z.array(z.string().regex(/^[A-Z]+$/)).optional(),
      allow: access,
      /** Match the path without regard to ASCII case, for upstreams that serve paths that way (IIS). */
      case_insensitive: z.boolean().default(false),
    }),
  )
  .default([])

/** `identity.headers_from_claims`: `{ Header-Name: claim }`, names checked (see claimHeaderProblem). */
const headersFromClaims = z.record(z.string(), z.string().min(1).max(256)).superRefine((map, ctx) => {
  const seen = new Set<string>()
  for (const name of Object.keys(map)) {
    const lower = name.toLowerCase()
    const message = seen.has(lower) ? 'named twice' : claimHeaderProblem(name)
    if (message !== undefined) ctx.addIssue({ code: 'custom', path: [name], message })
    seen.add(lower)
  }
})

/**
 * One app behind the gateway (docs/apps.md): requests whose Host is `host` and whose path is
 * `path_prefix` or under it (whole segments; the longest prefix wins) go to `upstream`, judged by
 * `routes`. Unset identity and timeout keys take the top-level ones.
 */
const app = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected lower-case letters, digits, - and _ (a metric label)'),
  host: z
    .string()
    .regex(
      /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
      'expected a host name without scheme or port, e.g. grafana.example.com',
    )
    .transform((h) => h.toLowerCase()),
  path_prefix: z
    .string()
    .default('/')
    .transform((v, ctx) => {
      const n = normalizePathPrefix(v)
      if ('problem' in n) {
        ctx.addIssue({ code: 'custom', message: n.problem })
        return z.NEVER
      }
      return n.prefix
    }),
  upstream: httpUrl,
  /**
   * Take `path_prefix` off the path the upstream gets (`/board/x` → `/x`), and send it as
   * X-Forwarded-Prefix, for an app that serves at its root. Default false: the path goes unchanged.
   */
  strip_prefix: z.boolean().default(false),
  /**
   * Names from `providers` this app accepts sessions and tokens of, and offers for sign-in. Default: every
   * provider.
   */
  providers: z.array(z.string().min(1)).min(1).optional(),
  routes: routeList,
  identity: z
    .strictObject({
      /** Default: the top-level identity.pass_access_token. */
      pass_access_token: z.boolean().optional(),
      /** This app's claim headers instead of the top-level identity.headers_from_claims (`{}`: none). */
      headers_from_claims: headersFromClaims.optional(),
      /** Over the top-level identity.assertion, key by key; the audience defaults to the app's origin. */
      assertion: z
        .strictObject({ enabled: z.boolean().optional(), audience: z.string().min(1).optional() })
        .optional(),
    })
    .default({}),
  /** Default: the top-level upstream_timeouts, key by key. */
  upstream_timeouts: z
    .strictObject({ connect: duration.optional(), headers: duration.optional(), body: duration.optional() })
    .default({}),
})

/** One OpenID Connect provider: `provider`, or each entry of `providers`. */
const providerObject = z.strictObject({
  preset: z.enum(['generic', 'cognito']).default('generic'),
  issuer: httpUrl,
  client_id: z.string().min(1),
  /** Required by client_secret_basic and client_secret_post; absent for a public client (`none`). */
  client_secret: secretRef.optional(),
  /**
   * How Gatehouse authenticates at the token and revocation endpoints. Default: from discovery's
   * `token_endpoint_auth_methods_supported`: client_secret_basic (else client_secret_post) with a
   * secret, `none` (a public client, PKCE only) without one.
   */
  client_auth: z.enum(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none']).optional(),
  /** private_key_jwt: the private key, PEM (PKCS #8) or a JWK, from a file or an environment variable. */
  client_key: z
    .union(
      [
        z.strictObject({ file: z.string().min(1), alg: clientKeyAlg }),
        z.strictObject({ env: z.string().min(1), alg: clientKeyAlg }),
      ],
      { error: 'expected { file: PATH } or { env: NAME }, with alg when the key is PEM (default RS256)' },
    )
    .optional(),
  /** When the client secret stops working, if the provider expires them (Entra ID does): watched by `gatehouse expiry`. */
  client_secret_expires: instant.optional(),
  /**
   * A PEM file of CA certificates (relative to the config file) trusted for the provider's https
   * endpoints besides Node's default roots: a provider on a private PKI, such as an internal Keycloak.
   */
  ca: z.string().min(1).optional(),
  scopes: z.array(z.string()).default(['openid', 'email', 'profile', 'offline_access']),
  /** Cognito: the hosted UI logout URL, e.g. https://auth.example.com/logout */
  end_session_url: httpUrl.optional(),
  /**
   * Put the ID token in the sign-out URL (`id_token_hint`) for a provider that needs it; by default
   * the URL carries `client_id` and `logout_hint` (the user's sub) and no token.
   */
  logout_id_token_hint: z.boolean().default(false),
  algorithms: z
    .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
    .min(1)
    .default(['RS256', 'ES256', 'EdDSA', 'PS256']),
  leeway: duration.default(30),
  timeout: duration.default(5),
  /**
   * Accepted `aud` values of provider access tokens; default: the client id, but then a token whose only
   * audience is the client id (an ID token's shape) passes only when typed `at+jwt`. Listing the client
   * id here accepts such tokens (Entra ID v2 access tokens for the gateway's own app registration).
   */
  audiences: z.array(z.string().min(1)).min(1).optional(),
  /** JOSE header `typ` of bearer access tokens: `lenient` accepts `at+jwt`, `JWT` or none; `strict` only `at+jwt` (RFC 9068). */
  access_token_typ: z.enum(['lenient', 'strict']).default('lenient'),
  /**
   * A session whose access token expired while the provider could not be reached (not when it refused)
   * stays valid this long, never past lifetimes.session.max_ttl; 0 turns it off.
   */
  outage_grace: duration.default(3600),
  /**
   * Calls to the provider: a breaker opens after `failures` in a row for `open_for`; at most
   * `max_in_flight` at once, up to `max_queued` more wait at most `queue_timeout` for a slot, and the
   * rest get 503 `idp_busy` with Retry-After at once.
   */
  breaker: z
    .strictObject({
      failures: z.number().int().min(1).default(5),
      open_for: duration.default(30),
      max_in_flight: z.number().int().min(1).default(16),
      max_queued: z.number().int().min(0).default(64),
      queue_timeout: duration.default(2),
    })
    .default({ failures: 5, open_for: 30, max_in_flight: 16, max_queued: 64, queue_timeout: 2 }),
  /** The provider's discovery document and JWKS: kept, refreshed, persisted (seed 000). */
  cache: z
    .strictObject({
      refresh_after: duration.default(600),
      stale_if_error: duration.default(3 * 86_400),
      unknown_kid_cooldown: duration.default(30),
    })
    .default({ refresh_after: 600, stale_if_error: 3 * 86_400, unknown_kid_cooldown: 30 }),
})

/** An entry of `providers` (docs/providers.md): a provider with the name sessions record and a title to show. */
const providerEntry = providerObject.extend({
  /** Recorded in sessions and in the callback path `/oauth2/callback/<name>`; a metric label. */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'expected lower-case letters, digits, - and _ (at most 32)'),
  /** What the sign-in chooser shows, e.g. "Company account". Default: the name. */
  title: z.string().min(1).max(80).optional(),
})

const configObject = z.strictObject({
  /** The origin browsers use; the callback is `<public_url>/oauth2/callback`. */
  public_url: httpUrl.refine(
    (u) => new URL(u).pathname === '/' && !new URL(u).search,
    'expected an origin without a path',
  ),
  /** The one app behind the gateway, at public_url; or leave it out and list `apps`. */
  upstream: httpUrl.optional(),
  /** Several apps, each at its own host (and path prefix): docs/apps.md. Not with `upstream`. */
  apps: z.array(app).min(1, 'expected at least one app (or leave apps out)').optional(),
  /** Where Gatehouse keeps its state (SQLite); relative paths are relative to the config file. */
  data_dir: z.string().min(1).default('.gatehouse'),
  /**
   * Shared state for many instances (Gatehouse 6). Without it everything lives in SQLite in data_dir.
   * `postgres`: keys, tokens, revocations, audit log, persisted copies. `redis`: rate-limit counters,
   * locks, revocation fan-out. A URL may be written inline only without a password; one with a
   * password comes from { env: NAME } or { file: PATH }.
   */
  store: z
    .strictObject({
      postgres: serviceUrl(['postgres', 'postgresql']).optional(),
      /** PostgreSQL schema holding Gatehouse's tables (created when missing). */
      schema: z
        .string()
        .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'expected lower-case letters, digits and _')
        .default('gatehouse'),
      redis: serviceUrl(['redis', 'rediss']).optional(),
      /** Prefix of every Redis key and channel, so several deployments can share one Redis. */
      redis_prefix: z
        .string()
        .regex(/^[A-Za-z0-9:_.-]{1,64}$/)
        .default('gatehouse:'),
      /** The oldest local copy of the shared store an instance starts from while PostgreSQL is down. */
      local_copy_max_age: duration.default(7 * 86_400),
    })
    .default({ schema: 'gatehouse', redis_prefix: 'gatehouse:', local_copy_max_age: 7 * 86_400 }),
  listen: z
    .strictObject({
      host: z.string().default('0.0.0.0'),
      port: z.number().int().min(0).max(65_535).default(8080),
    })
    .default({ host: '0.0.0.0', port: 8080 }),
  admin: z
    .strictObject({
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65_535).default(9090),
      /** Host names the admin port answers for besides IP literals, localhost and `host`; others get 421. */
      allowed_hosts: hostNames,
    })
    .default({ host: '127.0.0.1', port: 9090, allowed_hosts: [] }),
  /**
   * What a client may hold on the data port (the admin port takes the same): time to send the request
   * line and headers, and the whole request (`0`: no limit, so long uploads pass), how long an idle
   * keep-alive connection stays open, and how many connections are open at once, in all and from one
   * client address (an IPv6 /64 counts as one; `false`: no per-client cap). Timeouts are kept in ms.
   */
  server: z
    .strictObject({
      headers_timeout: durationMs.refine((ms) => ms > 0, 'expected a duration above 0').default(10_000),
      request_timeout: durationMs.default(0),
      keep_alive_timeout: durationMs.default(5_000),
      max_connections: z.number().int().min(1).default(10_000),
      max_connections_per_client: z.union([z.literal(false), z.number().int().min(1)]).default(256),
      /** Host names answered besides public_url's (IP literals and localhost always are); others get 421. */
      allowed_hosts: hostNames,
      /** The Host the upstream gets: public_url's, the upstream URL's own, or the client's (`preserve`). */
      upstream_host: z.enum(['public', 'upstream', 'preserve']).default('public'),
    })
    .refine((s) => s.request_timeout === 0 || s.request_timeout >= s.headers_timeout, {
      message: 'expected request_timeout to be 0 (off) or at least headers_timeout',
      path: ['request_timeout'],
    })
    .default({
      headers_timeout: 10_000,
      request_timeout: 0,
      keep_alive_timeout: 5_000,
      max_connections: 10_000,
      max_connections_per_client: 256,
      allowed_hosts: [],
      upstream_host: 'public',
    }),
  /** The OpenID Connect provider people sign in with; or leave it out and list `providers`. */
  provider: providerObject.optional(),
  /** Several providers (docs/providers.md), offered on a chooser page or chosen per app. Not with `provider`. */
  providers: z
    .array(providerEntry)
    .min(1, 'expected at least one provider (or leave providers out)')
    .optional(),
  session: z.strictObject({
    secrets: z.array(secretRef).min(1),
    refresh_before: duration.default(600),
    /** Rotate each cookie secret before it is this old (age counted from when Gatehouse first saw it); unset: age shown, never alerted. */
    secret_max_age: duration.optional(),
    cookie_name: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,32}$/)
      .default('gatehouse'),
    /**
     * One sign-in for every app under this domain (docs/apps.md): the session cookie goes to it and every
     * host under it (`__Secure-` over https), and signing in happens at public_url. Absent: per app host.
     */
    cookie_domain: z
      .string()
      .regex(
        /^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/,
        'expected a domain name with at least two labels, e.g. apps.example.com',
      )
      .transform((d) => d.replace(/^\./, '').toLowerCase())
      .optional(),
  }),
  /**
   * Every credential class declares both lifetimes; there are no defaults (seed 001: a hidden 32-day
   * default revoked everything at once). A child never outlives its parent: refresh under session,
   * derived_token under api_token.
   */
  lifetimes: z.strictObject({
    session: lifetime,
    refresh: lifetime,
    api_token: lifetime,
    derived_token: lifetime,
    signing_key: lifetime,
  }),
  keys: z
    .strictObject({
      algorithm: z.enum(['EdDSA', 'ES256']).default('EdDSA'),
      /** Encrypt private signing keys at rest; default: derived from session.secrets (HKDF, another label). */
      encryption_secrets: z.array(secretRef).min(1).optional(),
      /** A new key is published this long before it signs (longer than any verifier caches the JWKS). */
      publish_ahead: duration.default(86_400),
    })
    .default({ algorithm: 'EdDSA', publish_ahead: 86_400 }),
  tokens: z
    .strictObject({
      /** `aud` of Gatehouse's API tokens; default: public_url. */
      audience: z.string().min(1).optional(),
    })
    .default({}),
  /** Warn when more than `share` of live credentials expire within one `window` (seed 001's cliff). */
  expiry_cliff: z
    .strictObject({
      window: duration.default(3600),
      share: z.number().gt(0).lte(1).default(0.5),
      min_count: z.number().int().min(1).default(10),
    })
    .default({ window: 3600, share: 0.5, min_count: 10 }),
  /** 429 with Retry-After past these (seed 003). `false` turns a limit off. */
  rate_limits: z
    .strictObject({
      client: z.union([z.literal(false), rate]).default({ points: 6000, per: 60 }),
      credential: z.union([z.literal(false), rate]).default({ points: 3000, per: 60 }),
      auth_endpoints: z.union([z.literal(false), rate]).default({ points: 30, per: 60 }),
      /**
       * A client that presents the same refused token or cookie more than `after` times gets each
       * further 401 later (50 ms, doubling, at most `max_delay_ms`): clients that retry on the answer
       * (seed 003) are slowed to a trickle without holding a thread. `false`: answer at once.
       */
      repeat_penalty: z
        .union([
          z.literal(false),
          z.strictObject({
            after: z.number().int().min(0).default(5),
            max_delay_ms: z.number().int().min(1).max(10_000).default(1000),
          }),
        ])
        .default({ after: 5, max_delay_ms: 1000 }),
    })
    .default({
      client: { points: 6000, per: 60 },
      credential: { points: 3000, per: 60 },
      auth_endpoints: { points: 30, per: 60 },
      repeat_penalty: { after: 5, max_delay_ms: 1000 },
    }),
  /**
   * Load shedding: while the event loop lags more than `max_event_loop_delay_ms` (mean over half a
   * second), or more than `max_in_flight` requests are being handled, requests without a credential,
   * or with one refused a moment ago, get 503 with Retry-After before any work. `false`: never.
   */
  shedding: z
    .union([
      z.literal(false),
      z.strictObject({
        max_event_loop_delay_ms: z.number().int().min(10).default(200),
        max_in_flight: z.number().int().min(1).default(1024),
      }),
    ])
    .default({ max_event_loop_delay_ms: 200, max_in_flight: 1024 }),
  sign_in: z.strictObject({ ttl: duration.default(600) }).default({ ttl: 600 }),
  sign_out: z.strictObject({ redirect: z.string().startsWith('/').default('/') }).default({ redirect: '/' }),
  /** With `apps`, each app has its own routes instead (this stays empty). */
  routes: routeList,
  identity: z
    .strictObject({
      user_claim: z.string().default('sub'),
      groups_claim: z.string().optional(),
      pass_access_token: z.boolean().default(false),
      /** `{ Header-Name: claim }`: each header carries that claim upstream; a client's copy is always dropped. */
      headers_from_claims: headersFromClaims.default({}),
      /**
       * X-Gatehouse-Assertion: a short-lived JWT signed by Gatehouse's keys (served at /.well-known/jwks.json)
       * telling the upstream who the request is from (docs/identity-assertion.md).
       */
      assertion: z
        .strictObject({
          enabled: z.boolean().default(false),
          ttl: duration.refine((s) => s >= 10 && s <= 3600, 'expected a duration from 10s to 1h').default(60),
          /** `aud` of the assertions; default public_url's origin. */
          audience: z.string().min(1).optional(),
        })
        .default({ enabled: false, ttl: 60 }),
    })
    .default({
      user_claim: 'sub',
      pass_access_token: false,
      headers_from_claims: {},
      assertion: { enabled: false, ttl: 60 },
    }),
  headers: z
    .strictObject({
      hsts: z
        .union([
          z.literal(false),
          z.strictObject({
            max_age: duration.default(31_536_000),
            include_subdomains: z.boolean().default(false),
            preload: z.boolean().default(false),
          }),
        ])
        .optional(),
      content_security_policy: z.union([z.literal(false), z.string()]).optional(),
      frame_options: z.union([z.literal(false), z.enum(['DENY', 'SAMEORIGIN'])]).optional(),
      referrer_policy: z.union([z.literal(false), z.string()]).optional(),
      content_type_options: z.boolean().optional(),
    })
    .default({}),
  /**
   * Terminate TLS on the data port with this certificate chain and key (PEM files, relative to the config
   * file). Both files are checked for changes every `reload_check` and reloaded without a restart.
   */
  tls: z
    .strictObject({
      cert: z.string().min(1),
      key: z.string().min(1),
      reload_check: duration.default(30),
    })
    .optional(),
  /** The audit log of security events: kept this long in the durable store (`false`: forever). */
  audit: z
    .strictObject({ retention: z.union([z.literal(false), duration]).default(90 * 86_400) })
    .default({ retention: 90 * 86_400 }),
  /** Credential expiry alerts (Gatehouse 5): a webhook told once per threshold per credential. */
  alerts: z
    .strictObject({
      /** Where alerts are POSTed; a URL, or `{ env }` / `{ file }` holding it (Slack webhook URLs are secrets). */
      webhook: z
        .union([
          // https (plain http on loopback), no user:password: the rule a URL from { env } / { file } meets at start.
          z.string().superRefine((v, ctx) => {
            const problem = webhookUrlProblem(v)
            if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
          }),
          secretRef,
        ])
        .optional(),
      format: z.enum(['json', 'slack']).default('json'),
      thresholds: z
        .array(duration)
        .min(1)
        .refine((a) => a.every((t) => t > 0), 'expected durations above 0')
        .default([30 * 86_400, 7 * 86_400, 86_400]),
      /** How often the inventory is taken and thresholds checked. */
      check_every: duration.default(60),
    })
    .default({ format: 'json', thresholds: [30 * 86_400, 7 * 86_400, 86_400], check_every: 60 }),
  upstream_timeouts: z
    .strictObject({
      connect: duration.default(5),
      headers: duration.default(60),
      body: duration.default(300),
    })
    .default({ connect: 5, headers: 60, body: 300 }),
  shutdown: z.strictObject({ drain: duration.default(15) }).default({ drain: 15 }),
  log: z
    .strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') })
    .default({ level: 'info' }),
  /**
   * OpenTelemetry traces, exported by OTLP/HTTP (JSON). Absent (the default): no tracing, and the SDK is
   * never loaded; a client's `traceparent` still reaches the upstream unchanged.
   */
  telemetry: z
    .strictObject({
      traces: z
        .strictObject({
          /** Without it, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318. */
          otlp_endpoint: httpUrl.optional(),
          sample_ratio: z.number().min(0).max(1).default(0.1),
          service_name: z.string().min(1).default('gatehouse'),
          /** Continue a client's trace and follow its sampled flag; false: a new trace, linked to it. */
          trust_incoming_trace: z.boolean().default(false),
          record_client_address: z.boolean().default(false),
        })
        .optional(),
    })
    .default({}),
})

/** Each entry of a named list (`apps`, `providers`) has a name of its own; returns the names and their index. */
function uniqueNames(
  list: ReadonlyArray<{ name: string }> | undefined,
  key: 'apps' | 'providers',
  ctx: z.RefinementCtx,
): Map<string, number> {
  const names = new Map<string, number>()
  list?.forEach((entry, i) => {
    const first = names.get(entry.name)
    if (first !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: [key, i, 'name'],
        message: `expected a name of its own: ${key}[${first}] is already called ${entry.name}`,
      })
    else names.set(entry.name, i)
  })
  return names
}

/** The config file's schema: the keys above, and what only the whole can tell (an upstream, or apps). */
export const configSchema = configObject
  // Said with the other missing keys, not only once everything else is valid.
  .refine(
    (c: unknown) =>
      typeof c !== 'object' ||
      c === null ||
      'provider' in c ||
      ('providers' in c && (c as { providers: unknown }).providers !== undefined),
    {
      path: ['provider'],
      message: 'required: expected object, got nothing (or a list of providers)',
      when: () => true,
    },
  )
  .superRefine((c, ctx) => {
    if (c.provider !== undefined && c.providers !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['providers'],
        message: 'expected either provider or providers, not both (give this provider a name in providers)',
      })
    const names = uniqueNames(c.providers, 'providers', ctx)
    c.apps?.forEach((a, i) => {
      if (a.providers === undefined) return
      if (c.providers === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['apps', i, 'providers'],
          message: 'expected a top-level providers list to choose from (with one provider, leave this out)',
        })
        return
      }
      a.providers.forEach((name, j) => {
        if (!names.has(name))
          ctx.addIssue({
            code: 'custom',
            path: ['apps', i, 'providers', j],
            message: `expected one of ${[...names.keys()].join(', ')}, got ${name}`,
          })
      })
    })
  })
  .superRefine((c, ctx) => {
    if (c.apps === undefined) {
      if (c.upstream === undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['upstream'],
          message: 'expected an upstream URL, or a list of apps',
        })
      return
    }
    // Every key at the top level keeps its single-app meaning; with apps it would be ambiguous.
    if (c.upstream !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['upstream'],
        message: 'expected either upstream or apps, not both (give this upstream its own app)',
      })
    if (c.routes.length > 0)
      ctx.addIssue({
        code: 'custom',
        path: ['routes'],
        message: 'expected no top-level routes with apps: each app has its own routes',
      })
    const seen = new Map<string, number>()
    uniqueNames(c.apps, 'apps', ctx)
    c.apps.forEach((a, i) => {
      const at = `${a.host}${a.path_prefix === '/' ? '' : a.path_prefix}`
      const first = seen.get(at)
      if (first !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['apps', i, 'path_prefix'],
          message: `expected one app per host and path prefix: apps[${first}] is already at ${at}`,
        })
      else seen.set(at, i)
      if (a.strip_prefix && a.path_prefix === '/')
        ctx.addIssue({
          code: 'custom',
          path: ['apps', i, 'strip_prefix'],
          message: 'expected a path_prefix to strip: this app is at /',
        })
      // Gatehouse's own endpoints are under /oauth2 on every app host.
      if (underPrefix('/oauth2', a.path_prefix) || underPrefix('/.well-known', a.path_prefix))
        ctx.addIssue({
          code: 'custom',
          path: ['apps', i, 'path_prefix'],
          message: `expected a prefix outside /oauth2 and /.well-known (Gatehouse's own), got ${a.path_prefix}`,
        })
    })
  })
  // `provider` is always there after parsing: with `providers`, the first one (the default for sessions
  // signed in before the list existed, and for every key read from `provider` alone).
  .transform((c) => ({ ...c, provider: (c.provider ?? c.providers![0]!) as ProviderConfig }))

export type ProviderConfig = z.output<typeof providerObject>
export type ProviderEntry = z.output<typeof providerEntry>
export type ConfigInput = z.input<typeof configSchema>
export type Config = z.output<typeof configSchema>
