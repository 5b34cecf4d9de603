import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import {
  connect,
  createSecureContext,
  getCACertificates,
  type PeerCertificate as LegacyPeerCertificate,
  type TLSSocket,
} from 'node:tls'
import { buildConnector } from 'undici'
import { ConfigError } from '../config/errors.ts'
import { providerList } from '../config/providers.ts'
import type { Config } from '../config/schema.ts'

/** A TLS certificate as a peer presented it in a handshake. Times in seconds since the epoch. */
export interface ObservedCertificate {
  host: string
  port: number
  subject: string
  issuer: string
  serialNumber: string
  fingerprint256: string
  validFrom: number
  /** When the leaf stops being valid. */
  validTo: number
  /** The earliest end among the leaf and the chain it was sent with (an intermediate can expire first). */
  chainValidTo: number
  /** Which certificate of the chain ends at `chainValidTo` (its subject). */
  chainValidToSubject: string
  /** Whether the chain verified against the trust settings of the connection. */
  authorized: boolean
  authorizationError: string | undefined
  observedAt: number
  /** `handshake`: a connection Gatehouse made anyway; `probe`: a connection made only to look. */
  how: 'handshake' | 'probe'
}

const seconds = (date: string) => Math.floor(Date.parse(date) / 1000)

/** Reads the peer certificate (and the chain it sent) of a connected TLS socket; undefined when there is none. */
export function readPeerCertificate(
  socket: TLSSocket,
  host: string,
  port: number,
  how: ObservedCertificate['how'],
  nowSeconds: number,
): ObservedCertificate | undefined {
  const leaf = socket.getPeerX509Certificate()
  if (leaf === undefined) return undefined
  let chainValidTo = seconds(leaf.validTo)
  let chainValidToSubject = leaf.subject
  // The legacy object is the only way to the chain as sent; a self-signed certificate points at itself.
  let c: LegacyPeerCertificate | undefined = socket.getPeerCertificate(true)
  const seen = new Set<string>()
  while (c !== undefined && c.fingerprint256 !== undefined && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256)
    const end = seconds(c.valid_to)
    if (end < chainValidTo) {
      chainValidTo = end
      chainValidToSubject = formatName(c.subject)
    }
    c = (c as { issuerCertificate?: LegacyPeerCertificate }).issuerCertificate
  }
  const error = socket.authorizationError as unknown
  return {
    host,
    port,
    subject: leaf.subject.replaceAll('\n', ', '),
    issuer: leaf.issuer.replaceAll('\n', ', '),
    serialNumber: leaf.serialNumber,
    fingerprint256: leaf.fingerprint256,
    validFrom: seconds(leaf.validFrom),
    validTo: seconds(leaf.validTo),
    chainValidTo,
    chainValidToSubject: chainValidToSubject.replaceAll('\n', ', '),
    authorized: socket.authorized,
    authorizationError:
      error === null || error === undefined ? undefined : String((error as Error).message ?? error),
    observedAt: nowSeconds,
    how,
  }
}

function formatName(name: object | undefined): string {
  if (name === undefined) return ''
  return Object.entries(name as Record<string, string | string[] | undefined>)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(', ')
}

/** Where certificates seen in handshakes are kept, newest per `host:port`. */
export interface TLSObserver {
  record(cert: ObservedCertificate): void
  get(host: string, port: number): ObservedCertificate | undefined
  list(): ObservedCertificate[]
  /**
   * Whether Gatehouse itself has connected to `host:port` in this process (a handshake, not a probe):
   * an endpoint it really talks to, which may then be probed again when its certificate grows old.
   */
  seenInHandshake(host: string, port: number): boolean
}

export function createTLSObserver(): TLSObserver {
  const seen = new Map<string, ObservedCertificate>()
  const handshakes = new Set<string>()
  return {
    record(cert) {
      seen.set(`${cert.host}:${cert.port}`, cert)
      if (cert.how === 'handshake') handshakes.add(`${cert.host}:${cert.port}`)
    },
    get: (host, port) => seen.get(`${host}:${port}`),
    list: () => [...seen.values()],
    seenInHandshake: (host, port) => handshakes.has(`${host}:${port}`),
  }
}

/**
 * An undici connector that opens connections as undici would (same trust settings) and records the
 * certificate of every TLS handshake: the certificates Gatehouse depends on, read from the connections
 * it makes anyway. A refused handshake records nothing (the probe reports those).
 */
export function createObservingConnector(
  observer: TLSObserver,
  nowSeconds: () => number,
  options: buildConnector.BuildOptions = {},
): buildConnector.connector {
  // Given `ca`, tls.connect would build a secure context from the options on every connection: with
  // Node's few hundred roots in it, ~20 ms of CPU each time. Built once here, from the same options.
  const base = buildConnector(
    'ca' in options && options.ca !== undefined && options.secureContext === undefined
      ? { ...options, secureContext: createSecureContext(options) }
      : options,
  )
  return (opts, callback) =>
    base(opts, (err, socket) => {
      if (err === null && socket !== null && 'getPeerX509Certificate' in socket) {
        const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80)
        const cert = readPeerCertificate(socket as TLSSocket, opts.hostname, port, 'handshake', nowSeconds())
        if (cert !== undefined) observer.record(cert)
      }
      // undici's callback is typed as two overloads; forward as received.
      ;(callback as (e: Error | null, s: unknown) => void)(err, socket)
    })
}

export interface ProbeOptions {
  /** Give up after this long. Default 3000. */
  timeoutMs?: number
  /**
   * Trust anchors; default Node's. Give those of the connections to the endpoint: for the provider's,
   * `provider.ca` with Node's roots (`readCAFile`).
   */
  ca?: string | Buffer | Array<string | Buffer> | undefined
  nowSeconds: number
}

/**
 * Opens a TLS connection only to read the certificate, then closes it. The chain is verified as
 * usual but a failure does not stop the read: an expired or untrusted certificate is exactly what
 * must be reported (with `authorized: false` and why).
 */
export function probeTLS(host: string, port: number, options: ProbeOptions): Promise<ObservedCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      // RFC 6066 §3: SNI carries a host name, never an address.
      servername: isIP(host) === 0 ? host : undefined,
      rejectUnauthorized: false,
      ca: options.ca,
      ALPNProtocols: ['http/1.1'],
    })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`TLS probe of ${host}:${port} timed out`))
    }, options.timeoutMs ?? 3000)
    socket.once('secureConnect', () => {
      clearTimeout(timer)
      const cert = readPeerCertificate(socket, host, port, 'probe', options.nowSeconds)
      socket.destroy()
      if (cert === undefined) reject(new Error(`${host}:${port} presented no certificate`))
      else resolve(cert)
    })
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      socket.destroy()
      reject(new Error(`TLS probe of ${host}:${port} failed: ${err.code ?? err.message}`))
    })
  })
}

/** The certificates of a PEM bundle (the first is the leaf). Throws a clear error on anything else. */
export function parsePEMChain(pem: string, where: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) throw new Error(`${where}: no PEM certificate found`)
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b)
    } catch (err) {
      throw new Error(`${where}: certificate ${i + 1} cannot be read: ${(err as Error).message}`)
    }
  })
}

/**
 * Trust anchors for a server on a private PKI: Node's default ones (its bundled roots, and
 * NODE_EXTRA_CA_CERTS and the system store when Node uses them) plus the certificates of `pem`, so a
 * server with a public certificate is still trusted. Throws when `pem` holds no certificate.
 */
export function trustWithCA(pem: string, where: string): string[] {
  return [...getCACertificates('default'), ...parsePEMChain(pem, where).map((c) => c.toString())]
}

/**
 * The trust anchors of a CA file named in the config (a PEM path relative to the config file, such as
 * `provider.ca`), with Node's default ones; undefined when none is configured (Node's defaults apply).
 * Throws a message naming the key when the file cannot be read or holds no certificate.
 */
export function readCAFile(file: string | undefined, baseDir: string, key: string): string[] | undefined {
  if (file === undefined) return undefined
  const path = resolve(baseDir, file)
  let pem: string
  try {
    pem = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('config', [
      {
        path: key,
        message: `cannot read CA file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      },
    ])
  }
  try {
    return trustWithCA(pem, `CA file ${file}`)
  } catch (err) {
    throw new ConfigError('config', [{ path: key, message: (err as Error).message }])
  }
}

/**
 * Every provider's `ca` (config `provider` or `providers`), read: what provider connections trust besides
 * Node's roots. Undefined when none has one (an empty list would trust nothing at all).
 */
export function providerCAs(
  config: Pick<Config, 'provider' | 'providers'>,
  baseDir: string,
): string[] | undefined {
  const pems = providerList(config).flatMap(
    ({ path, config: p }) => readCAFile(p.ca, baseDir, `${path}.ca`) ?? [],
  )
  return pems.length === 0 ? undefined : pems
}
