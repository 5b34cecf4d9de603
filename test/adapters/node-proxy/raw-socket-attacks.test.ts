/**
 * Attacks that live at the HTTP level (Gatehouse 8), sent over raw sockets (node:net) to the whole Node
 * gateway in front of real upstreams that read the request the way common frameworks do: a Koa-style
 * upstream that parses the target as a URL, a Tomcat-style one that cuts path parameters before
 * resolving dot segments, and one that decodes twice and trims trailing dots (IIS-style).
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Gateway, startGateway } from '../../../src/app.ts'
import { DEV_LIFETIMES } from '../../../src/cli/dev-config.ts'
import { validateConfig } from '../../../src/config/load.ts'
import { silentLogger } from '../../../src/core/ports.ts'
import { sessionCookie } from '../../helpers/session.ts'

const SECRET = 'raw-socket-test-secret-0123456789-abcdefghij'

interface Received {
  url: string
  rawHeaders: string[]
  /** The path as each kind of upstream reads the target. */
  koa: string
  tomcat: string
  lenient: string
}

/** Cut `;params` from each segment, then resolve dot segments: `..;` is `..` (Tomcat, Jetty). */
function tomcatPath(target: string): string {
  const path = target.split('?')[0]!
  const out: string[] = []
  for (const raw of path.split('/').slice(1)) {
    const segment = raw.split(';')[0]!
    if (segment === '..') out.pop()
    else if (segment !== '.') out.push(segment)
  }
  return '/' + out.join('/')
}

/** Decode twice (overlong UTF-8 as the ASCII it means), trim trailing dots and spaces, resolve. */
function lenientPath(target: string): string {
  let path = target.split('?')[0]!
  for (let i = 0; i < 2; i++) {
    path = path
      .replace(/%C0%AE/gi, '.')
      .replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)))
  }
  const out: string[] = []
  for (const raw of path.split('/').slice(1)) {
    const segment = raw === '.' || raw === '..' ? raw : raw.replace(/[. ]+$/, '')
    if (segment === '..') out.pop()
    else if (segment !== '.') out.push(segment)
  }
  return '/' + out.join('/')
}

async function startUpstream() {
  const received: Received[] = []
  const server = createServer((req: IncomingMessage, res) => {
    const url = req.url ?? ''
    received.push({
      url,
      rawHeaders: req.rawHeaders,
      koa: new URL(url, 'http://upstream.invalid').pathname,
      tomcat: tomcatPath(url),
      lenient: lenientPath(url),
    })
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(`served ${url}`)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

interface RawReply {
  status: number
  headers: Record<string, string>
  body: string
}

/** Sends `head` (request line and header lines, without the blank line) on a fresh connection. */
async function raw(gateway: Gateway, lines: string[]): Promise<RawReply> {
  const { hostname, port } = new URL(gateway.url)
  const socket = connect(Number(port), hostname)
  await once(socket, 'connect')
  socket.write(`${[...lines, 'Connection: close'].join('\r\n')}\r\n\r\n`)
  const chunks: Buffer[] = []
  for await (const chunk of socket) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('latin1')
  const end = text.indexOf('\r\n\r\n')
  const [statusLine, ...headerLines] = text.slice(0, end).split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  let body = text.slice(end + 4)
  if (headers['transfer-encoding'] === 'chunked') {
    let decoded = ''
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at)
      const size = Number.parseInt(body.slice(at, eol), 16)
      if (!(size > 0)) break
      decoded += body.slice(eol + 2, eol + 2 + size)
      at = eol + 2 + size + 2
    }
    body = decoded
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body }
}

function codeOf(reply: RawReply): string | undefined {
  try {
    return (JSON.parse(reply.body) as { error?: string }).error
  } catch {
    return /bad_path|forbidden|duplicate_authorization/.exec(reply.body)?.[0]
  }
}

async function gatewayFor(upstream: string): Promise<Gateway> {
  const config = validateConfig({
    public_url: 'http://localhost:8080',
    upstream,
    data_dir: mkdtempSync(join(tmpdir(), 'gh-raw-')),
    listen: { host: '127.0.0.1', port: 0 },
    provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'c', client_secret: { env: 'S' } },
    session: { secrets: [{ env: 'S' }] },
    lifetimes: { ...DEV_LIFETIMES, session: { ttl: '1h', max_ttl: '2h' } },
    routes: [
      { path: '/admin/*', allow: { groups: ['admins'] } },
      { path: '/Reports/*', case_insensitive: true, allow: { groups: ['admins'] } },
      { path: '/public/*', allow: 'anonymous' },
      { path: '*', allow: 'authenticated' },
    ],
  })
  return startGateway(config, { baseDir: process.cwd(), log: silentLogger, admin: false, env: { S: SECRET } })
}

let upstream: Awaited<ReturnType<typeof startUpstream>>
let gateway: Gateway
/** A signed-in user who is not in `admins`. */
let staff: string

before(async () => {
  upstream = await startUpstream()
  gateway = await gatewayFor(upstream.url)
  staff = await sessionCookie(SECRET, {
    sid: 'staff-1',
    identity: { sub: 'u1', user: 'u1', email: 'u1@example.com', groups: ['staff'] },
  })
})
after(async () => {
  await gateway.close()
  await upstream.close()
})

function reachedAdmin(from: number): Received[] {
  return upstream.received
    .slice(from)
    .filter((r) => [r.koa, r.tomcat, r.lenient].some((p) => p === '/admin' || p.startsWith('/admin/')))
}

describe('path normalisation over a raw socket', () => {
  test('GET /admin#x is refused with 400 bad_path; the Koa-style upstream never serves /admin', async () => {
    const from = upstream.received.length
    for (const target of ['/admin#x', '/admin/users#frag', '/public/x#/../../admin']) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost', `Cookie: ${staff}`])
      assert.equal(reply.status, 400, target)
      assert.equal(codeOf(reply), 'bad_path', target)
    }
    assert.equal(upstream.received.length, from, 'the upstream was not reached')
  })

  test('forward-auth: X-Forwarded-Uri: /admin#x answers 400 bad_path, not 202', async () => {
    const reply = await raw(gateway, [
      'GET /oauth2/auth HTTP/1.1',
      'Host: localhost',
      `Cookie: ${staff}`,
      'X-Forwarded-Uri: /admin#x',
      'X-Forwarded-Method: GET',
    ])
    assert.equal(reply.status, 400)
    assert.equal(codeOf(reply), 'bad_path')
    const semicolon = await raw(gateway, [
      'GET /oauth2/auth HTTP/1.1',
      'Host: localhost',
      `Cookie: ${staff}`,
      'X-Forwarded-Uri: /admin;x',
    ])
    assert.equal(semicolon.status, 403, 'a rule for /admin covers /admin;x')
  })

  test('Unicode look-alikes of / \\ and . (NFKC, best-fit mapping) are refused, escaped or raw UTF-8', async () => {
    const from = upstream.received.length
    for (const target of [
      '/admin%EF%BC%8Fusers',
      '/public/%EF%BC%8E%EF%BC%8E/admin',
      '/public%EF%BC%BC..%EF%BC%BCadmin',
      '/public/\uFF0E\uFF0E/admin',
      '/admin\uFF0Fusers',
      '/public\u2215..\u2215admin',
    ]) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost', `Cookie: ${staff}`])
      assert.equal(reply.status, 400, target)
      // Escaped: Gatehouse's 400 bad_path. Raw bytes past ASCII: Node's parser refuses the request line first.
      if (target.includes('%')) assert.equal(codeOf(reply), 'bad_path', target)
    }
    assert.equal(upstream.received.length, from, 'the upstream was not reached')
  })

  test('/public/..;/admin (Tomcat reads ..; as ..) is refused; no upstream reading reaches /admin', async () => {
    const from = upstream.received.length
    for (const target of ['/public/..;/admin', '/public/.;/admin', '/public/%2e%2e;x/admin/users']) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost'])
      assert.equal(reply.status, 400, target)
      assert.equal(codeOf(reply), 'bad_path', target)
    }
    assert.deepEqual(reachedAdmin(from), [])
  })

  test('double encoding and overlong UTF-8 are refused before any upstream can decode them to /admin', async () => {
    const from = upstream.received.length
    for (const target of ['/%2561dmin', '/public/%C0%AE%C0%AE/admin', '/public/%252e%252e/admin', '/a%zz']) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost', `Cookie: ${staff}`])
      assert.equal(reply.status, 400, target)
      assert.equal(codeOf(reply), 'bad_path', target)
    }
    assert.deepEqual(reachedAdmin(from), [])
  })

  test('/admin;x, /admin., /admin./ and /admin/ are judged as /admin: 403 for a non-admin', async () => {
    const from = upstream.received.length
    for (const target of [
      '/admin;x',
      '/admin;jsessionid=1/users',
      '/admin.',
      '/admin./',
      '/admin%20',
      '//admin',
    ]) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost', `Cookie: ${staff}`])
      assert.equal(reply.status, 403, target)
    }
    assert.equal(upstream.received.length, from, 'the upstream was not reached')
  })

  test('case_insensitive: /REPORTS/x matches the rule for /Reports/*', async () => {
    const from = upstream.received.length
    for (const target of ['/reports/q1', '/REPORTS/q1', '/rEpOrTs']) {
      const reply = await raw(gateway, [`GET ${target} HTTP/1.1`, 'Host: localhost', `Cookie: ${staff}`])
      assert.equal(reply.status, 403, target)
    }
    assert.equal(upstream.received.length, from)
  })

  test('an allowed request reaches the upstream with exactly the path that was judged', async () => {
    const from = upstream.received.length
    const reply = await raw(gateway, ['GET /public/a/../%62/c;v=1?q=%2561 HTTP/1.1', 'Host: localhost'])
    assert.equal(reply.status, 200)
    assert.equal(upstream.received.length, from + 1)
    assert.equal(upstream.received[from]!.url, '/public/b/c;v=1?q=%2561')
  })
})

describe('open redirects through dot segments, at the gateway', () => {
  test('sign_out?rd=/.//evil.example and ?rd=/..//x answer a same-origin Location', async () => {
    for (const rd of ['/.//evil.example', '/..//x', '/%2e%2e//x']) {
      const reply = await raw(gateway, [`GET /oauth2/sign_out?rd=${rd} HTTP/1.1`, 'Host: localhost'])
      assert.equal(reply.status, 302, rd)
      const location = reply.headers['location']!
      assert.equal(new URL(location, 'http://localhost:8080').origin, 'http://localhost:8080', location)
      assert.equal(location, '/', rd)
    }
  })
})

describe('identity headers spelled with underscores (CGI reads _ as -)', () => {
  const spoofed = [
    'X_Auth_Request_User: root',
    'x-auth_request-user: root',
    'X-Auth-Request_Email: root@evil.example',
    'X_AUTH_REQUEST_GROUPS: admins',
    'X_Forwarded_For: 203.0.113.66',
    'x_forwarded_host: evil.example',
    'X_Real_IP: 203.0.113.66',
    'X_Gatehouse_Degraded: no',
    'Keep_Alive: timeout=1',
    'Proxy: http://203.0.113.66:3128',
    'X-Custom_Header: kept',
  ]
  /** The header names as a WSGI/CGI upstream sees them: `HTTP_` + upper case, `-` as `_`. */
  const cgi = (name: string) => `HTTP_${name.toUpperCase().replace(/-/g, '_')}`

  for (const [label, path, cookie] of [
    ['anonymous route', '/public/page', undefined],
    ['signed-in route', '/page', 'staff'],
  ] as const) {
    test(`${label}: none reaches the upstream; only Gatehouse's own values do`, async () => {
      const from = upstream.received.length
      const lines = [`GET ${path} HTTP/1.1`, 'Host: localhost', ...spoofed]
      if (cookie !== undefined) lines.push(`Cookie: ${staff}`)
      const reply = await raw(gateway, lines)
      assert.equal(reply.status, 200)
      const got = upstream.received[from]!
      const names = got.rawHeaders.filter((_, i) => i % 2 === 0)
      const values = new Map<string, string[]>()
      for (let i = 0; i < got.rawHeaders.length; i += 2) {
        const key = cgi(got.rawHeaders[i]!)
        values.set(key, [...(values.get(key) ?? []), got.rawHeaders[i + 1]!])
      }
      assert.deepEqual(
        names.filter((n) => n.includes('_')),
        ['x-custom_header'],
        'only the header no rule protects keeps its underscore',
      )
      assert.deepEqual(values.get('HTTP_X_FORWARDED_FOR'), ['127.0.0.1'])
      assert.deepEqual(values.get('HTTP_X_FORWARDED_HOST'), ['localhost:8080'], "public_url's host")
      assert.deepEqual(values.get('HTTP_X_REAL_IP'), ['127.0.0.1'])
      assert.equal(values.get('HTTP_X_GATEHOUSE_DEGRADED'), undefined)
      assert.equal(values.get('HTTP_KEEP_ALIVE'), undefined)
      assert.equal(values.get('HTTP_PROXY'), undefined, 'httpoxy: Proxy becomes HTTP_PROXY under CGI')
      if (cookie === undefined) {
        assert.equal(values.get('HTTP_X_AUTH_REQUEST_USER'), undefined)
        assert.equal(values.get('HTTP_X_AUTH_REQUEST_EMAIL'), undefined)
        assert.equal(values.get('HTTP_X_AUTH_REQUEST_GROUPS'), undefined)
      } else {
        assert.deepEqual(values.get('HTTP_X_AUTH_REQUEST_USER'), ['u1'])
        assert.deepEqual(values.get('HTTP_X_AUTH_REQUEST_EMAIL'), ['u1@example.com'])
        assert.deepEqual(values.get('HTTP_X_AUTH_REQUEST_GROUPS'), ['staff'])
      }
    })
  }
})

describe('Gatehouse cookies never reach the upstream, whatever separates them', () => {
  test('Cookie: a=1, gatehouse=… and two Cookie lines: the upstream gets the other cookies only', async () => {
    const cases: Array<{ lines: string[]; expected: string }> = [
      { lines: [`Cookie: theme=dark, ${staff}`], expected: 'theme=dark' },
      { lines: [`Cookie: ${staff}, theme=dark`], expected: 'theme=dark' },
      { lines: [`Cookie: theme=dark,${staff}; lang=en`], expected: 'theme=dark,lang=en' },
      { lines: ['Cookie: theme=dark', `Cookie: ${staff}`], expected: 'theme=dark' },
      { lines: [`Cookie: ${staff}`, 'Cookie: theme=dark, lang=en'], expected: 'theme=dark, lang=en' },
    ]
    for (const { lines, expected } of cases) {
      const from = upstream.received.length
      const reply = await raw(gateway, ['GET /page HTTP/1.1', 'Host: localhost', ...lines])
      assert.equal(reply.status, 200, lines.join(' | '))
      const got = upstream.received[from]!
      const cookies: string[] = []
      for (let i = 0; i < got.rawHeaders.length; i += 2)
        if (got.rawHeaders[i]!.toLowerCase() === 'cookie') cookies.push(got.rawHeaders[i + 1]!)
      assert.deepEqual(cookies, [expected], lines.join(' | '))
      assert.ok(!cookies.join().includes('gatehouse'), 'no Gatehouse cookie upstream')
    }
  })
})

describe('two Authorization headers', () => {
  test('are refused with 400 duplicate_authorization before the policy; the upstream is not reached', async () => {
    const from = upstream.received.length
    for (const [path, lines] of [
      ['/public/page', ['Authorization: Bearer a.b.c', 'Authorization: Basic YWRtaW46YWRtaW4=']],
      ['/page', [`Cookie: ${staff}`, 'Authorization: Bearer x.y.z', 'authorization: Bearer x.y.z']],
      ['/oauth2/auth', ['X-Forwarded-Uri: /public/x', 'Authorization: Basic a', 'AUTHORIZATION: Basic b']],
    ] as const) {
      const reply = await raw(gateway, [
        `GET ${path} HTTP/1.1`,
        'Host: localhost',
        'Accept: application/json',
        ...lines,
      ])
      assert.equal(reply.status, 400, path)
      assert.equal(codeOf(reply), 'duplicate_authorization', path)
    }
    const upgrade = await raw(gateway, [
      'GET /public/ws HTTP/1.1',
      'Host: localhost',
      'Upgrade: websocket',
      'Connection: Upgrade',
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      'Authorization: Bearer a',
      'Authorization: Bearer b',
    ])
    assert.equal(upgrade.status, 400, 'an upgrade too')
    assert.equal(upstream.received.length, from, 'the upstream was not reached')
  })

  test('one Authorization header is still forwarded on an anonymous route', async () => {
    const from = upstream.received.length
    const reply = await raw(gateway, [
      'GET /public/page HTTP/1.1',
      'Host: localhost',
      'Authorization: Basic YTpi',
    ])
    assert.equal(reply.status, 200)
    const got = upstream.received[from]!.rawHeaders
    assert.deepEqual(
      got.filter((_, i) => i % 2 === 1 && got[i - 1]!.toLowerCase() === 'authorization'),
      ['Basic YTpi'],
    )
  })
})

describe('identity values past ASCII', () => {
  test('names in any script reach the upstream as UTF-8 bytes; the request is served', async () => {
    const cookie = await sessionCookie(SECRET, {
      sid: 'intl-1',
      identity: {
        sub: 'u-intl',
        user: 'José',
        email: 'zoë@example.com',
        groups: ['équipe', '開発'],
        preferredUsername: '王小明',
      },
    })
    const from = upstream.received.length
    const reply = await raw(gateway, ['GET /page HTTP/1.1', 'Host: localhost', `Cookie: ${cookie}`])
    assert.equal(reply.status, 200)
    const got = upstream.received[from]!
    const header = (name: string) => {
      const i = got.rawHeaders.findIndex((n, k) => k % 2 === 0 && n.toLowerCase() === name)
      // Node reads header bytes as latin1: turn them back into bytes, then read those as UTF-8.
      return i === -1 ? undefined : Buffer.from(got.rawHeaders[i + 1]!, 'latin1').toString('utf8')
    }
    assert.equal(header('x-auth-request-user'), 'José')
    assert.equal(header('x-auth-request-email'), 'zoë@example.com')
    assert.equal(header('x-auth-request-groups'), 'équipe,開発')
    assert.equal(header('x-auth-request-preferred-username'), '王小明')
  })
})
