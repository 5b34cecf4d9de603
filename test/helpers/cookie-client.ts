// A scripted browser for tests: fetch with a cookie jar and hand-driven redirects.
//
// The jar follows RFC 6265bis where tests can tell: Domain (host-only when absent), Path (default-path when
// absent), Max-Age over Expires, deletion by Max-Age<=0 or a past Expires, Secure cookies neither stored from
// nor sent over http, and the __Host-/__Secure- prefixes. It has no notion of sites: SameSite is recorded but
// every request is treated as a same-site top-level navigation.

export interface StoredCookie {
  readonly name: string
  readonly value: string
  /** Lower-case host the cookie belongs to (without leading dot). */
  readonly domain: string
  /** True when set without a Domain attribute: sent to exactly that host. */
  readonly hostOnly: boolean
  readonly path: string
  /** Unix epoch milliseconds; undefined for a session cookie. */
  readonly expiresAtMs?: number
  readonly secure: boolean
  readonly httpOnly: boolean
  readonly sameSite?: string
}

export interface FollowResult {
  /** The last response: the first that is not a redirect. */
  readonly response: Response
  /** URL of that last response. */
  readonly url: string
  /** Every URL requested, in order, starting with the first. */
  readonly hops: string[]
}

export interface CookieClient {
  /** One request, redirects not followed. Sends the jar's matching cookies and stores the Set-Cookie ones. */
  request(url: string | URL, init?: RequestInit): Promise<Response>
  /**
   * Requests and follows 3xx Location headers (relative ones too) until a non-redirect. 303, and 301/302 after
   * a POST, continue as GET without a body; 307/308 repeat the method and body. Throws after `maxHops` redirects.
   */
  follow(url: string | URL, init?: RequestInit, maxHops?: number): Promise<FollowResult>
  /** POSTs `fields` as application/x-www-form-urlencoded, redirects not followed. */
  postForm(url: string | URL, fields: Record<string, string>): Promise<Response>
  /** The cookies the jar would send to `url` now. */
  cookies(url: string | URL): StoredCookie[]
}

export interface CookieClientOptions {
  /** Clock for cookie expiry, Unix epoch milliseconds. Default `Date.now`. */
  now?: () => number
  /** Default global `fetch`. */
  fetch?: typeof fetch
}

/**
 * @example
 * ```ts
 * const browser = createCookieClient()
 * const { response, hops } = await browser.follow('http://127.0.0.1:1234/_idp/auth?…')
 * ```
 */
export function createCookieClient(options: CookieClientOptions = {}): CookieClient {
  const now = options.now ?? Date.now
  const fetchImpl = options.fetch ?? fetch
  // Keyed by name, domain and path (RFC 6265bis §5.7 step 23).
  const jar = new Map<string, StoredCookie>()

  function matching(url: URL): StoredCookie[] {
    const host = url.hostname.toLowerCase()
    const secure = url.protocol === 'https:'
    const nowMs = now()
    const result: StoredCookie[] = []
    for (const [key, cookie] of jar) {
      if (cookie.expiresAtMs !== undefined && cookie.expiresAtMs <= nowMs) {
        jar.delete(key)
        continue
      }
      if (cookie.hostOnly ? host !== cookie.domain : !domainMatches(host, cookie.domain)) continue
      if (!pathMatches(url.pathname, cookie.path)) continue
      if (cookie.secure && !secure) continue
      result.push(cookie)
    }
    // Longer paths first (RFC 6265bis §5.8.3 step 2).
    return result.sort((a, b) => b.path.length - a.path.length)
  }

  function store(url: URL, header: string): void {
    const cookie = parseSetCookie(url, header, now())
    if (!cookie) return
    const key = `${cookie.name}\u0000${cookie.domain}\u0000${cookie.path}`
    if (cookie.expiresAtMs !== undefined && cookie.expiresAtMs <= now()) {
      jar.delete(key)
      return
    }
    jar.set(key, cookie)
  }

  async function request(input: string | URL, init: RequestInit = {}): Promise<Response> {
    const url = new URL(input)
    const headers = new Headers(init.headers)
    const cookies = matching(url)
    if (cookies.length > 0) headers.set('cookie', cookies.map((c) => `${c.name}=${c.value}`).join('; '))
    const response = await fetchImpl(url, { ...init, headers, redirect: 'manual' })
    for (const header of response.headers.getSetCookie()) store(url, header)
    return response
  }

  return {
    request,

    async follow(input, init = {}, maxHops = 10) {
      let url = new URL(input)
      let currentInit = init
      const hops: string[] = []
      for (let redirects = 0; ; redirects += 1) {
        hops.push(url.href)
        const response = await request(url, currentInit)
        const location = response.headers.get('location')
        if (response.status < 300 || response.status > 399 || location === null) {
          return { response, url: url.href, hops }
        }
        if (redirects >= maxHops) throw new Error(`more than ${maxHops} redirects: ${hops.join(' -> ')}`)
        await response.body?.cancel()
        const method = (currentInit.method ?? 'GET').toUpperCase()
        if (
          response.status === 303 ||
          ((response.status === 301 || response.status === 302) && method === 'POST')
        ) {
          const headers = new Headers(currentInit.headers)
          headers.delete('content-type')
          headers.delete('content-length')
          currentInit = { ...currentInit, method: 'GET', body: null, headers }
        }
        url = new URL(location, url)
      }
    },

    postForm(url, fields) {
      return request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(fields).toString(),
      })
    },

    cookies(url) {
      return matching(new URL(url))
    },
  }
}

function parseSetCookie(url: URL, header: string, nowMs: number): StoredCookie | undefined {
  const [pair = '', ...attributes] = header.split(';')
  const eq = pair.indexOf('=')
  if (eq === -1) return undefined
  const name = pair.slice(0, eq).trim()
  const value = pair.slice(eq + 1).trim()
  if (name === '') return undefined

  const host = url.hostname.toLowerCase()
  const secureRequest = url.protocol === 'https:'
  let domain: string | undefined
  let path: string | undefined
  let maxAge: number | undefined
  let expires: number | undefined
  let secure = false
  let httpOnly = false
  let sameSite: string | undefined
  for (const attribute of attributes) {
    const index = attribute.indexOf('=')
    const key = (index === -1 ? attribute : attribute.slice(0, index)).trim().toLowerCase()
    const raw = index === -1 ? '' : attribute.slice(index + 1).trim()
    switch (key) {
      case 'domain':
        if (raw !== '') domain = raw.replace(/^\./, '').toLowerCase()
        break
      case 'path':
        path = raw.startsWith('/') ? raw : undefined
        break
      case 'max-age':
        if (/^-?\d+$/.test(raw)) maxAge = Number(raw)
        break
      case 'expires': {
        const parsed = Date.parse(raw)
        if (!Number.isNaN(parsed)) expires = parsed
        break
      }
      case 'secure':
        secure = true
        break
      case 'httponly':
        httpOnly = true
        break
      case 'samesite':
        sameSite = raw.toLowerCase()
        break
    }
  }

  // A non-secure origin may not set Secure cookies (RFC 6265bis §5.7 step 14).
  if (secure && !secureRequest) return undefined
  if (domain !== undefined && !domainMatches(host, domain)) return undefined
  if (name.startsWith('__Secure-') && !secure) return undefined
  if (name.startsWith('__Host-') && (!secure || domain !== undefined || path !== '/')) return undefined

  let expiresAtMs: number | undefined
  if (maxAge !== undefined) expiresAtMs = maxAge <= 0 ? 0 : nowMs + maxAge * 1000
  else if (expires !== undefined) expiresAtMs = expires

  const cookie: { -readonly [K in keyof StoredCookie]: StoredCookie[K] } = {
    name,
    value,
    domain: domain ?? host,
    hostOnly: domain === undefined,
    path: path ?? defaultPath(url.pathname),
    secure,
    httpOnly,
  }
  if (expiresAtMs !== undefined) cookie.expiresAtMs = expiresAtMs
  if (sameSite !== undefined) cookie.sameSite = sameSite
  return cookie
}

function domainMatches(host: string, domain: string): boolean {
  if (host === domain) return true
  // IP addresses only ever match exactly.
  if (/^[\d.]+$/.test(host) || host.includes(':')) return false
  return host.endsWith(`.${domain}`)
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true
  if (!requestPath.startsWith(cookiePath)) return false
  return cookiePath.endsWith('/') || requestPath.charAt(cookiePath.length) === '/'
}

function defaultPath(requestPath: string): string {
  if (!requestPath.startsWith('/')) return '/'
  const last = requestPath.lastIndexOf('/')
  return last <= 0 ? '/' : requestPath.slice(0, last)
}

/**
 * A browser whose requests to `base` go to a Web fetch handler (as an edge runtime would hand them over),
 * the rest to the network; a GET asking for HTML is marked a navigation, as browsers mark them.
 */
export function fetchHandlerBrowser(
  base: string,
  handle: (request: Request) => Promise<Response>,
  network: typeof fetch,
): CookieClient {
  return createCookieClient({
    fetch: (async (input, init) => {
      const url = String(input instanceof Request ? input.url : input)
      if (!url.startsWith(base)) return network(input, init)
      const headers = new Headers(init?.headers)
      if ((init?.method ?? 'GET') === 'GET' && (headers.get('accept') ?? '').includes('text/html'))
        headers.set('sec-fetch-mode', 'navigate')
      return handle(new Request(url, { ...init, headers, redirect: 'manual' }))
    }) as typeof fetch,
  })
}
