/** The keys connections are counted under, and the Host check both ports use. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createHostCheck, hostnameOf } from '../../../src/adapters/node-proxy/allowed-hosts.ts'
import { clientKey, httpServerOptions } from '../../../src/adapters/node-proxy/server-limits.ts'

test('clientKey: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64', () => {
  assert.equal(clientKey('203.0.113.7'), '203.0.113.7')
  assert.equal(clientKey('::ffff:203.0.113.7'), '203.0.113.7')
  assert.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  assert.equal(clientKey('2001:0DB8:0001:0002::9'), '2001:db8:1:2::/64')
  assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
  assert.equal(clientKey('2001:db8::1'), clientKey('2001:db8:0:0:ffff::2'), 'one /64, one key')
  assert.notEqual(clientKey('2001:db8:0:1::1'), clientKey('2001:db8:0:2::1'))
  assert.equal(clientKey('::1'), '0:0:0:0::/64')
  assert.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
})

test('httpServerOptions: Node checks timeouts often enough, and a request timeout below the header timeout is refused', () => {
  const o = httpServerOptions({
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 0,
    keepAliveTimeoutMs: 5_000,
    maxConnections: 1,
  })
  assert.equal(o.headersTimeout, 10_000)
  assert.equal(o.requestTimeout, 0)
  assert.equal(o.connectionsCheckingInterval, 1000)
  assert.equal(o.handshakeTimeout, 10_000)
  assert.throws(
    () =>
      httpServerOptions({
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 5_000,
        keepAliveTimeoutMs: 0,
        maxConnections: 1,
      }),
    TypeError,
  )
})

test('Host check: names, domains, IP literals and localhost; nothing that only looks like them', () => {
  assert.equal(hostnameOf('App.Example.com.:8443'), 'app.example.com')
  assert.equal(hostnameOf('[::1]:9090'), '::1')
  assert.equal(hostnameOf('user@evil.example'), undefined)
  assert.equal(hostnameOf('evil.example/x'), undefined)
  assert.equal(hostnameOf('[not-ip]'), undefined)
  const allowed = createHostCheck(['app.example.com', '.internal.example', '10.0.0.1'])
  for (const host of [
    'app.example.com',
    'APP.EXAMPLE.COM:443',
    'internal.example',
    'a.b.internal.example:9090',
    'localhost:9090',
    '127.0.0.1',
    '[::1]:9090',
    '192.0.2.1:8080',
    undefined,
  ]) {
    assert.equal(allowed(host), true, String(host))
  }
  for (const host of [
    'evil.example',
    'app.example.com.evil.example',
    'evilinternal.example',
    'internal.example.evil.example',
    'localhost.evil.example',
    'app.example.com@evil.example',
    '',
    ' app.example.com',
  ]) {
    assert.equal(allowed(host), false, host)
  }
  assert.throws(() => createHostCheck(['https://app.example.com']), TypeError)
})
