import assert from 'node:assert/strict'
import { test } from 'node:test'
import { describeConfig } from '../../src/cli/check.ts'
import { ConfigError, validateConfig } from '../../src/config/load.ts'
import {
  appHostOf,
  createAppRouter,
  createAppSelector,
  normalizePathPrefix,
  underPrefix,
} from '../../src/core/apps.ts'
import type { RequestFacts, Respond } from '../../src/core/decisions.ts'
import { silentLogger } from '../../src/core/ports.ts'

const base = {
  public_url: 'https://gate.example.com',
  provider: { issuer: 'https://idp.example.com', client_id: 'gh', client_secret: { env: 'GH_SECRET' } },
  session: { secrets: [{ env: 'GH_SESSION' }] },
  lifetimes: {
    session: { ttl: '12h', max_ttl: '7d' },
    refresh: { ttl: '7d', max_ttl: '30d' },
    api_token: { ttl: '30d', max_ttl: '90d' },
    derived_token: { ttl: '1h', max_ttl: '1d' },
    signing_key: { ttl: '30d', max_ttl: '180d' },
  },
}

function problems(input: unknown) {
  try {
    validateConfig(input)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

test('path prefixes are normalised, and anything that is not plain segments is refused with the reason', () => {
  assert.deepEqual(normalizePathPrefix('/'), { prefix: '/' })
  assert.deepEqual(normalizePathPrefix('/grafana/'), { prefix: '/grafana' })
  assert.deepEqual(normalizePathPrefix('/tools/grafana'), { prefix: '/tools/grafana' })
  for (const bad of [
    'grafana',
    '//',
    '/a//b',
    '/a/./b',
    '/a/..',
    '/%2e%2e',
    '/a%2Fb',
    '/a?x',
    '/a#x',
    '/a b',
    '/a\\b',
  ]) {
    const n = normalizePathPrefix(bad)
    assert.ok('problem' in n, bad)
  }
})

test('a prefix matches whole segments only', () => {
  assert.equal(underPrefix('/grafana', '/grafana'), true)
  assert.equal(underPrefix('/grafana', '/grafana/'), true)
  assert.equal(underPrefix('/grafana', '/grafana/d/1'), true)
  assert.equal(underPrefix('/grafana', '/grafanax'), false)
  assert.equal(underPrefix('/grafana', '/'), false)
  assert.equal(underPrefix('/', '/anything'), true)
})

test('Host values: lower-cased, port and trailing dot dropped; IP literals and junk name no app', () => {
  assert.equal(appHostOf('Grafana.Example.COM:8443'), 'grafana.example.com')
  assert.equal(appHostOf('grafana.example.com.'), 'grafana.example.com')
  assert.equal(appHostOf('[::1]:80'), undefined)
  assert.equal(appHostOf('a.example.com, b.example.com'), undefined)
  assert.equal(appHostOf('a.example.com@evil'), undefined)
  assert.equal(appHostOf(undefined), undefined)
})

test('the app is chosen by exact host, then by the longest prefix', () => {
  const apps = createAppSelector([
    { host: 'tools.example.com', pathPrefix: '/', app: 'home' },
    { host: 'tools.example.com', pathPrefix: '/grafana', app: 'grafana' },
    { host: 'tools.example.com', pathPrefix: '/grafana/admin', app: 'grafana-admin' },
    { host: 'wiki.example.com', pathPrefix: '/docs', app: 'docs' },
  ])
  assert.equal(apps.select('tools.example.com', '/'), 'home')
  assert.equal(apps.select('TOOLS.example.com:443', '/grafana'), 'grafana')
  assert.equal(apps.select('tools.example.com', '/grafana/d/1'), 'grafana')
  assert.equal(apps.select('tools.example.com', '/grafanax'), 'home')
  assert.equal(apps.select('tools.example.com', '/grafana/admin/users'), 'grafana-admin')
  assert.equal(apps.select('wiki.example.com', '/docs/a'), 'docs')
  assert.equal(apps.select('wiki.example.com', '/other'), undefined)
  assert.equal(apps.select('sub.tools.example.com', '/'), undefined, 'no suffix matching')
  assert.equal(apps.ownerOf('tools.example.com'), 'home', 'the app at / answers the own endpoints')
  assert.equal(apps.ownerOf('wiki.example.com'), 'docs', 'else the first listed')
  assert.equal(apps.ownerOf('other.example.com'), undefined)
  assert.throws(
    () =>
      createAppSelector([
        { host: 'a.example.com', pathPrefix: '/', app: 1 },
        { host: 'a.example.com', pathPrefix: '/', app: 2 },
      ]),
    TypeError,
  )
})

function facts(url: string, headers: Record<string, string>): RequestFacts {
  return {
    method: 'GET',
    url,
    header: (name) => headers[name],
    clientAddress: '127.0.0.1',
    form: async () => 'unsupported_media_type' as const,
  }
}

test('the router: Host and the normalised path; forward-auth by X-Forwarded-Host and the original URI', () => {
  const route = createAppRouter(
    createAppSelector([
      { host: 'wiki.test', pathPrefix: '/', app: 'wiki' },
      { host: 'wiki.test', pathPrefix: '/ops', app: 'ops' },
      { host: 'grafana.test', pathPrefix: '/', app: 'grafana' },
    ]),
    { prefix: '/oauth2', log: silentLogger },
  )
  const code = (r: string | Respond) => (typeof r === 'string' ? r : `${r.status} ${r.code}`)
  assert.equal(code(route(facts('/ops/x', { host: 'wiki.test' }))), 'ops')
  // A dot segment or an escaped one never switches apps: the path is normalised first.
  assert.equal(code(route(facts('/ops/../admin', { host: 'wiki.test' }))), 'wiki')
  assert.equal(code(route(facts('/ops/%2e%2e/admin', { host: 'wiki.test' }))), 'wiki')
  assert.equal(code(route(facts('/x/../ops/y', { host: 'wiki.test' }))), 'ops')
  assert.equal(code(route(facts('/%6Fps/y', { host: 'wiki.test' }))), 'ops')
  assert.equal(code(route(facts('/opsx', { host: 'wiki.test' }))), 'wiki')
  // What upstreams read as under /ops (path parameters, trailing dots) is the /ops app's too.
  assert.equal(code(route(facts('/ops;x/y', { host: 'wiki.test' }))), 'ops')
  assert.equal(code(route(facts('/ops./y', { host: 'wiki.test' }))), 'ops')
  assert.equal(code(route(facts('//ops/y', { host: 'wiki.test' }))), 'ops')
  assert.equal(code(route(facts('/', { host: 'unknown.test' }))), '421 misdirected_request')
  assert.equal(code(route(facts('/', {}))), '421 misdirected_request')
  // Own endpoints: the host's owner (the app at /), whatever the path prefix apps.
  assert.equal(code(route(facts('/oauth2/callback?code=1', { host: 'wiki.test' }))), 'wiki')
  assert.equal(code(route(facts('/oauth2/sign_in', { host: 'nope.test' }))), '421 misdirected_request')
  // A path refused by normalisation is answered by the host's owner (its 400 bad_path).
  assert.equal(code(route(facts('/a/%2F/b', { host: 'grafana.test' }))), 'grafana')
  // Forward-auth: Gatehouse's own Host does not matter, X-Forwarded-Host and the URI do.
  const fa = (h: Record<string, string>) =>
    code(route(facts('/oauth2/auth', { host: '127.0.0.1:4180', ...h })))
  assert.equal(fa({ 'x-forwarded-host': 'grafana.test', 'x-forwarded-uri': '/d/1' }), 'grafana')
  assert.equal(fa({ 'x-forwarded-host': 'wiki.test', 'x-forwarded-uri': '/ops/1' }), 'ops')
  assert.equal(fa({ 'x-forwarded-host': 'wiki.test', 'x-original-uri': '/ops/1' }), 'ops')
  assert.equal(fa({ 'x-forwarded-host': 'wiki.test', 'x-forwarded-uri': '/ops/../page' }), 'wiki')
  assert.equal(fa({ 'x-forwarded-host': 'other.test', 'x-forwarded-uri': '/' }), '403 unknown_app')
  assert.equal(
    fa({ 'x-forwarded-host': 'wiki.test, grafana.test', 'x-forwarded-uri': '/' }),
    '403 unknown_app',
  )
  assert.equal(fa({ 'x-forwarded-uri': '/' }), '400 missing_forwarded_host')
  // No URI: the app's core answers 400 missing_forwarded_uri, never a verdict.
  assert.equal(fa({ 'x-forwarded-host': 'grafana.test' }), 'grafana')
  const only = createAppRouter(createAppSelector([{ host: 'a.test', pathPrefix: '/docs', app: 'docs' }]), {
    prefix: '/oauth2',
    log: silentLogger,
  })
  assert.equal(code(only(facts('/other', { host: 'a.test' }))), '404 no_app')
  // Gatehouse's own endpoints and keys exist on every app host, whatever its prefixes.
  assert.equal(code(only(facts('/.well-known/jwks.json', { host: 'a.test' }))), 'docs')
  assert.equal(code(only(facts('/oauth2/callback', { host: 'a.test' }))), 'docs')
})

test('config: apps validate, and the old single-upstream config is unchanged', () => {
  const single = validateConfig({ ...base, upstream: 'http://127.0.0.1:3000' })
  assert.equal(single.upstream, 'http://127.0.0.1:3000')
  assert.equal(single.apps, undefined)
  const c = validateConfig({
    ...base,
    identity: { pass_access_token: true },
    apps: [
      { name: 'grafana', host: 'Grafana.Example.com', upstream: 'http://grafana:3000' },
      {
        name: 'wiki',
        host: 'tools.example.com',
        path_prefix: '/wiki/',
        upstream: 'http://wiki:80',
        routes: [{ path: '/wiki/public/*', allow: 'anonymous' }],
        identity: { pass_access_token: false },
        upstream_timeouts: { headers: '2m' },
      },
    ],
  })
  const [g, w] = c.apps!
  assert.equal(g!.host, 'grafana.example.com')
  assert.equal(g!.path_prefix, '/')
  assert.deepEqual(g!.routes, [])
  assert.equal(w!.path_prefix, '/wiki')
  assert.equal(w!.upstream_timeouts.headers, 120)
  assert.equal(w!.identity.pass_access_token, false)
})

test('config: precise errors for apps', () => {
  const app = { name: 'a', host: 'a.example.com', upstream: 'http://a:1' }
  const at = (input: unknown) => problems(input).map((p) => `${p.path}: ${p.message}`)
  assert.match(at(base).join('\n'), /^upstream: expected an upstream URL, or a list of apps$/m)
  assert.match(
    at({ ...base, upstream: 'http://x:1', apps: [app] }).join('\n'),
    /^upstream: expected either upstream or apps, not both/m,
  )
  assert.match(
    at({ ...base, apps: [app], routes: [{ path: '/x', allow: 'anonymous' }] }).join('\n'),
    /^routes: expected no top-level routes with apps/m,
  )
  assert.match(
    at({ ...base, apps: [app, { ...app, name: 'b', host: 'A.example.com', path_prefix: '/' }] }).join('\n'),
    /^apps\[1\]\.path_prefix: expected one app per host and path prefix: apps\[0\] is already at a\.example\.com$/m,
  )
  assert.match(
    at({ ...base, apps: [app, { ...app, host: 'b.example.com' }] }).join('\n'),
    /^apps\[1\]\.name: expected a name of its own: apps\[0\] is already called a$/m,
  )
  assert.match(
    at({ ...base, apps: [{ ...app, path_prefix: '/a/../b' }] }).join('\n'),
    /^apps\[0\]\.path_prefix: expected a path of plain segments/m,
  )
  assert.match(
    at({ ...base, apps: [{ ...app, path_prefix: '/oauth2/x' }] }).join('\n'),
    /^apps\[0\]\.path_prefix: expected a prefix outside \/oauth2 and \/\.well-known/m,
  )
  assert.match(
    at({ ...base, apps: [{ ...app, host: 'a.example.com:8443' }] }).join('\n'),
    /^apps\[0\]\.host: expected a host name without scheme or port/m,
  )
  assert.match(at({ ...base, apps: [] }).join('\n'), /^apps: expected at least one app/m)
  assert.match(
    at({ ...base, apps: [{ ...app, provider: {} }] }).join('\n'),
    /^apps\[0\]: unknown key\(s\) "provider"/m,
  )
})

test('gatehouse check prints each app: where, upstream, callback to register, routes', () => {
  const { text } = describeConfig(
    validateConfig({
      ...base,
      apps: [
        { name: 'grafana', host: 'grafana.example.com', upstream: 'http://grafana:3000' },
        {
          name: 'wiki',
          host: 'tools.example.com',
          path_prefix: '/wiki',
          upstream: 'http://wiki:80',
          routes: [{ path: '/wiki/admin/*', allow: { groups: ['admins'] } }],
        },
      ],
    }),
  )
  assert.match(text, /^App grafana: https:\/\/grafana\.example\.com -> http:\/\/grafana:3000$/m)
  assert.match(text, /^ {2}callback https:\/\/grafana\.example\.com\/oauth2\/callback$/m)
  assert.match(text, /^App wiki: https:\/\/tools\.example\.com\/wiki -> http:\/\/wiki:80$/m)
  assert.match(text, /^ {2}callback https:\/\/tools\.example\.com\/oauth2\/callback$/m)
  assert.match(text, /^ {4}1\. \* +\/wiki\/admin\/\* +groups \[admins\]/m)
})
