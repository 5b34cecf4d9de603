/**
 * `apps[].strip_prefix` (docs/apps.md): an app at a path prefix whose upstream serves at its root gets
 * the path without the prefix and X-Forwarded-Prefix, for every spelling the router takes as the prefix,
 * over raw sockets; other apps on the host are untouched, and a client's X-Forwarded-Prefix never passes.
 */
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { stripPathPrefix } from '../../src/adapters/node-proxy/server.ts'
import { type Gateway, startGateway } from '../../src/app.ts'
import { DEV_LIFETIMES } from '../../src/cli/dev-config.ts'
import { type ConfigError, validateConfig } from '../../src/config/load.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { rawRequest } from '../helpers/localhost-names.ts'
import { freePort, type RecordingUpstream, startRecordingUpstream } from '../helpers/net.ts'

test('stripPathPrefix takes off the segments the router matched, whatever their spelling', () => {
  const cases: Array<[string, string, string]> = [
    ['/board/x?y=1', '/board', '/x?y=1'],
    ['/board', '/board', '/'],
    ['/board?q', '/board', '/?q'],
    ['/board/', '/board', '/'],
    ['/board;jsessionid=1/x', '/board', '/x'],
    ['/board./x', '/board', '/x'],
    ['//board/x', '/board', '/x'],
    ['/tools/board/a/b', '/tools/board', '/a/b'],
    ['/tools//board/a', '/tools/board', '/a'],
  ]
  for (const [path, prefix, out] of cases) assert.equal(stripPathPrefix(path, prefix), out, path)
})

test('strip_prefix needs a prefix', () => {
  assert.throws(
    () =>
      validateConfig({
        public_url: 'http://localhost:8080',
        provider: { issuer: 'http://127.0.0.1:9/idp', client_id: 'gh', client_secret: { env: 'S' } },
        session: { secrets: [{ env: 'S' }] },
        lifetimes: DEV_LIFETIMES,
        apps: [{ name: 'a', host: 'a.localhost', upstream: 'http://127.0.0.1:3000', strip_prefix: true }],
      }),
    (err: ConfigError) => err.problems.some((p) => p.path === 'apps[0].strip_prefix'),
  )
})

describe('strip_prefix through the Node proxy', () => {
  let root: RecordingUpstream
  let board: RecordingUpstream
  let gateway: Gateway
  let port: number
  const get = (target: string, extra = '') =>
    rawRequest(port, `GET ${target} HTTP/1.1\r\nhost: tools.localhost:${port}\r\n${extra}`)

  before(async () => {
    port = await freePort()
    ;[root, board] = await Promise.all([startRecordingUpstream(), startRecordingUpstream()])
    gateway = await startGateway(
      validateConfig({
        public_url: `http://localhost:${port}`,
        data_dir: mkdtempSync(join(tmpdir(), 'gh-strip-')),
        provider: {
          issuer: 'http://127.0.0.1:9/idp',
          client_id: 'gh',
          client_secret: { env: 'S' },
          timeout: 1,
        },
        session: { secrets: [{ env: 'S' }] },
        lifetimes: DEV_LIFETIMES,
        apps: [
          {
            name: 'root',
            host: 'tools.localhost',
            upstream: root.url,
            routes: [{ path: '*', allow: 'anonymous' }],
          },
          {
            name: 'board',
            host: 'tools.localhost',
            path_prefix: '/board',
            strip_prefix: true,
            upstream: board.url,
            routes: [{ path: '*', allow: 'anonymous' }],
          },
        ],
      }),
      {
        baseDir: process.cwd(),
        log: silentLogger,
        admin: false,
        listen: { host: '127.0.0.1', port },
        env: { S: 'strip-prefix-test-session-secret-0123456789' },
      },
    )
  })

  after(async () => {
    await gateway?.close()
    await Promise.all([root?.close(), board?.close()])
  })

  test('the board app hears its own root and the prefix; the root app is untouched; spoofs are dropped', async () => {
    for (const [target, heard] of [
      ['/board/x?y=1', '/x?y=1'],
      ['/board', '/'],
      ['/board;jsessionid=1/x', '/x'],
      ['/board./x', '/x'],
      ['//board/x', '/x'],
      ['/BOARD/x', undefined],
    ] as const) {
      const before = [root.requests.length, board.requests.length]
      const r = await get(target, 'x-forwarded-prefix: /evil\r\nx_forwarded_prefix: /evil\r\n')
      assert.equal(r.status, 200, `${target}: ${r.text.slice(0, 200)}`)
      if (heard === undefined) {
        // Not the prefix (paths are case-sensitive): the root app, with the path as sent.
        assert.deepEqual([root.requests.length, board.requests.length], [before[0]! + 1, before[1]])
        const seen = root.requests.at(-1)!
        assert.equal(seen.url, target)
        assert.equal(seen.headers['x-forwarded-prefix'], undefined, 'a client-sent prefix never passes')
        assert.equal(seen.headers['x_forwarded_prefix'], undefined, 'nor in its underscore spelling')
        continue
      }
      assert.deepEqual([root.requests.length, board.requests.length], [before[0], before[1]! + 1], target)
      const seen = board.requests.at(-1)!
      assert.equal(seen.url, heard, target)
      assert.equal(seen.headers['x-forwarded-prefix'], '/board', target)
      assert.equal(seen.headers['x_forwarded_prefix'], undefined, target)
    }
    const r = await get('/boardx/y')
    assert.equal(r.status, 200)
    assert.equal(root.requests.at(-1)!.url, '/boardx/y', 'a longer name is not under the prefix')
  })
})
