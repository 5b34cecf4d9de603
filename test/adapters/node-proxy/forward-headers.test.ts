import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { describe, it } from 'node:test'
import {
  buildUpstreamHeaders,
  filterResponseHeaders,
} from '../../../src/adapters/node-proxy/forward-headers.ts'

// buildUpstreamHeaders reads only rawHeaders and the parsed Connection header.
function clientRequest(raw: string[]): IncomingMessage {
  const connection: string[] = []
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.toLowerCase() === 'connection') connection.push(raw[i + 1]!)
  return {
    rawHeaders: raw,
    headers: connection.length > 0 ? { connection: connection.join(', ') } : {},
  } as unknown as IncomingMessage
}

const facts = { identity: {}, clientAddress: '192.0.2.7', proto: 'https', host: 'app.example' } as const

describe('buildUpstreamHeaders', () => {
  it('copies end-to-end headers, keeps duplicates, and sets the forwarding headers', () => {
    const headers = buildUpstreamHeaders(
      clientRequest([
        'Host',
        'app.example',
        'Accept',
        'text/html',
        'X-Custom',
        'a',
        'x-custom',
        'b',
        'Authorization',
        'Bearer t',
      ]),
      { ...facts, identity: { 'X-Auth-Request-User': 'alice', 'X-Auth-Request-Email': 'a@example.com' } },
    )
    assert.deepEqual(
      { ...headers },
      {
        host: 'app.example',
        accept: 'text/html',
        'x-custom': ['a', 'b'],
        authorization: 'Bearer t',
        'x-forwarded-for': '192.0.2.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'app.example',
        'x-real-ip': '192.0.2.7',
        'x-auth-request-user': 'alice',
        'x-auth-request-email': 'a@example.com',
      },
    )
  })

  it('never passes client-sent identity or forwarding headers', () => {
    const headers = buildUpstreamHeaders(
      clientRequest([
        'X-Auth-Request-User',
        'admin',
        'x-auth-request-groups',
        'root',
        'X-Gatehouse-Session',
        'forged',
        'X-Forwarded-For',
        '10.0.0.1',
        'X-Forwarded-Host',
        'evil.example',
        'X-Forwarded-Proto',
        'http',
        'Forwarded',
        'for=10.0.0.1',
        'X-Real-IP',
        '10.0.0.1',
      ]),
      facts,
    )
    assert.deepEqual(
      { ...headers },
      {
        'x-forwarded-for': '192.0.2.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'app.example',
        'x-real-ip': '192.0.2.7',
      },
    )
  })

  it('lets identity headers replace a client header of the same name', () => {
    const headers = buildUpstreamHeaders(clientRequest(['X-User', 'mallory']), {
      ...facts,
      identity: { 'X-User': 'alice' },
    })
    assert.equal(headers['x-user'], 'alice')
  })

  it('drops hop-by-hop headers and those named in Connection, but never Host', () => {
    const headers = buildUpstreamHeaders(
      clientRequest([
        'Host',
        'app.example',
        'Host',
        'second.example',
        'Connection',
        'keep-alive, X-Hop, host',
        'X-Hop',
        'secret',
        'Keep-Alive',
        'timeout=5',
        'Proxy-Connection',
        'keep-alive',
        'Proxy-Authorization',
        'Basic Zm9vOmJhcg==',
        'TE',
        'trailers',
        'Trailer',
        'X-Checksum',
        'Transfer-Encoding',
        'chunked',
        'Upgrade',
        'websocket',
        'Expect',
        '100-continue',
      ]),
      facts,
    )
    assert.equal(headers['host'], 'app.example')
    for (const name of [
      'connection',
      'x-hop',
      'keep-alive',
      'proxy-connection',
      'proxy-authorization',
      'te',
      'trailer',
      'transfer-encoding',
      'upgrade',
      'expect',
    ]) {
      assert.equal(headers[name], undefined, name)
    }
  })

  it('keeps Upgrade and sends Connection: upgrade for an upgrade', () => {
    const headers = buildUpstreamHeaders(
      clientRequest(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Key', 'k']),
      { ...facts, upgrade: true },
    )
    assert.equal(headers['upgrade'], 'websocket')
    assert.equal(headers['connection'], 'upgrade')
    assert.equal(headers['sec-websocket-key'], 'k')
  })

  it('replaces the Cookie header, or drops it when no cookie is left', () => {
    const raw = ['Cookie', '__Host-gatehouse=secret; theme=dark', 'cookie', 'lang=en']
    assert.equal(
      buildUpstreamHeaders(clientRequest(raw), { ...facts, cookie: 'theme=dark; lang=en' })['cookie'],
      'theme=dark; lang=en',
    )
    assert.equal(
      buildUpstreamHeaders(clientRequest(raw), { ...facts, cookie: undefined })['cookie'],
      undefined,
    )
    assert.equal(buildUpstreamHeaders(clientRequest(raw), { ...facts, cookie: '' })['cookie'], undefined)
  })

  it('does not let a header named __proto__ touch the prototype', () => {
    const headers = buildUpstreamHeaders(clientRequest(['__proto__', 'x']), facts)
    assert.equal(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value, 'x')
    assert.equal(Object.getPrototypeOf(headers), null)
  })
})

describe('filterResponseHeaders', () => {
  it('drops hop-by-hop headers and those the response names in Connection', () => {
    const out = filterResponseHeaders([
      Buffer.from('Content-Type'),
      Buffer.from('text/plain'),
      Buffer.from('Connection'),
      Buffer.from('keep-alive, X-Upstream-Private'),
      Buffer.from('Keep-Alive'),
      Buffer.from('timeout=5'),
      Buffer.from('Transfer-Encoding'),
      Buffer.from('chunked'),
      Buffer.from('X-Upstream-Private'),
      Buffer.from('1'),
      Buffer.from('Proxy-Authenticate'),
      Buffer.from('Basic'),
      Buffer.from('Set-Cookie'),
      Buffer.from('a=1'),
      Buffer.from('Set-Cookie'),
      Buffer.from('b=2'),
    ])
    assert.deepEqual(out, ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'])
  })

  it('adds headers only when absent, and appends the gateway headers after the upstream ones', () => {
    const out = filterResponseHeaders(['X-Frame-Options', 'SAMEORIGIN', 'Set-Cookie', 'app=1'], {
      addIfAbsent: [
        ['x-frame-options', 'DENY'],
        ['x-content-type-options', 'nosniff'],
      ],
      append: [['Set-Cookie', '__Host-gatehouse=s; Path=/; Secure; HttpOnly; SameSite=Lax']],
    })
    assert.deepEqual(out, [
      'X-Frame-Options',
      'SAMEORIGIN',
      'Set-Cookie',
      'app=1',
      'x-content-type-options',
      'nosniff',
      'Set-Cookie',
      '__Host-gatehouse=s; Path=/; Secure; HttpOnly; SameSite=Lax',
    ])
  })

  it('adds a header the upstream sent only as a Connection-nominated one', () => {
    const out = filterResponseHeaders(['Connection', 'x-frame-options', 'X-Frame-Options', 'ALLOWALL'], {
      addIfAbsent: [['x-frame-options', 'DENY']],
    })
    assert.deepEqual(out, ['x-frame-options', 'DENY'])
  })

  it('keeps latin1 header bytes as they were', () => {
    const out = filterResponseHeaders([Buffer.from('X-Name'), Buffer.from([0x63, 0x61, 0x66, 0xe9])])
    assert.equal(Buffer.from(out[1]!, 'latin1').toString('hex'), '636166e9')
  })
})
