import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
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

/**
 * A self-signed certificate made by the openssl CLI, valid from now for `days` days, for `127.0.0.1`
 * and `localhost`. RSA 2048 (what a provider's RS256 key is) or P-256.
 */
export function makeCertificate(options: {
  days: number
  cn?: string
  type?: 'rsa' | 'ec'
}): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'gh-cert-'))
  try {
    const key = join(dir, 'key.pem')
    const cert = join(dir, 'cert.pem')
    const keyArgs =
      options.type === 'rsa'
        ? ['-newkey', 'rsa:2048']
        : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
    execFileSync(
      '/usr/bin/openssl',
      [
        'req',
        '-x509',
        ...keyArgs,
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        String(options.days),
        '-subj',
        `/CN=${options.cn ?? 'localhost'}`,
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: 'pipe' },
    )
    const certPem = readFileSync(cert, 'utf8')
    const keyPem = readFileSync(key, 'utf8')
    const derBase64 = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '')
    const notAfter = Math.floor(
      Date.parse(
        execFileSync('/usr/bin/openssl', ['x509', '-noout', '-enddate', '-in', cert], { encoding: 'utf8' })
          .trim()
          .replace('notAfter=', ''),
      ) / 1000,
    )
    return { certPem, keyPem, derBase64, notAfter }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
