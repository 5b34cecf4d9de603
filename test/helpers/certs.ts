import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface TestCertificate {
  certPem: string
  keyPem: string
  /** DER, base64 (not base64url): what an `x5c` member holds (RFC 7517 §4.7). */
  derBase64: string
  /** When it stops being valid, seconds since the epoch. */
  notAfter: number
}

const OPENSSL = '/usr/bin/openssl'

function keyArgs(type: 'rsa' | 'ec' | undefined): string[] {
  return type === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
}

function read(dir: string): TestCertificate {
  const cert = join(dir, 'cert.pem')
  const certPem = readFileSync(cert, 'utf8')
  const keyPem = readFileSync(join(dir, 'key.pem'), 'utf8')
  const derBase64 = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '')
  const notAfter = Math.floor(
    Date.parse(
      execFileSync(OPENSSL, ['x509', '-noout', '-enddate', '-in', cert], { encoding: 'utf8' })
        .trim()
        .replace('notAfter=', ''),
    ) / 1000,
  )
  return { certPem, keyPem, derBase64, notAfter }
}

function inTempDir<T>(work: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'gh-cert-'))
  try {
    return work(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * A certificate made by the openssl CLI, valid from now for `days` days, for `127.0.0.1` and
 * `localhost`. RSA 2048 (what a provider's RS256 key is) or P-256. Self-signed, or with `signedBy` a
 * server certificate issued by that CA (see `makeCA`), as on a private PKI.
 */
export function makeCertificate(options: {
  days: number
  cn?: string
  type?: 'rsa' | 'ec'
  signedBy?: TestCertificate
}): TestCertificate {
  const subject = `/CN=${options.cn ?? 'localhost'}`
  const san = 'subjectAltName=IP:127.0.0.1,DNS:localhost'
  return inTempDir((dir) => {
    const key = join(dir, 'key.pem')
    const cert = join(dir, 'cert.pem')
    const days = String(options.days)
    const run = (args: string[]) => execFileSync(OPENSSL, args, { stdio: 'pipe' })
    if (options.signedBy === undefined) {
      run([
        'req',
        '-x509',
        ...keyArgs(options.type),
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        days,
        '-subj',
        subject,
        '-addext',
        san,
      ])
      return read(dir)
    }
    const csr = join(dir, 'req.csr')
    const ext = join(dir, 'ext.cnf')
    writeFileSync(join(dir, 'ca.pem'), options.signedBy.certPem)
    writeFileSync(join(dir, 'ca.key'), options.signedBy.keyPem, { mode: 0o600 })
    writeFileSync(
      ext,
      `${san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`,
    )
    run(['req', '-new', ...keyArgs(options.type), '-nodes', '-keyout', key, '-out', csr, '-subj', subject])
    run([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      join(dir, 'ca.pem'),
      '-CAkey',
      join(dir, 'ca.key'),
      '-set_serial',
      `0x${randomBytes(8).toString('hex')}`,
      '-days',
      days,
      '-extfile',
      ext,
      '-out',
      cert,
    ])
    return read(dir)
  })
}

/** A self-signed CA certificate (P-256) valid from now for `days` days, to sign server certificates with. */
export function makeCA(options: { days: number; cn?: string }): TestCertificate {
  return inTempDir((dir) => {
    execFileSync(
      OPENSSL,
      [
        'req',
        '-x509',
        ...keyArgs('ec'),
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        String(options.days),
        '-subj',
        `/CN=${options.cn ?? 'Gatehouse Test CA'}`,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      { stdio: 'pipe' },
    )
    return read(dir)
  })
}
