import type { X509Certificate } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { parsePEMChain } from '../../expiry/tls.ts'

export interface TLSMaterial {
  cert: Buffer
  key: Buffer
  /** The certificates of `cert`, leaf first. */
  chain: X509Certificate[]
}

export interface TLSFiles {
  /** What is served now. */
  current(): TLSMaterial
  /**
   * Reads both files again when either changed (modification time or size) and returns the new
   * material, or undefined when nothing changed. Throws, keeping the current material, when the new
   * files do not form a usable pair (a half-written renewal, a key that does not match).
   */
  reloadIfChanged(): TLSMaterial | undefined
  certPath: string
}

function load(certPath: string, keyPath: string): TLSMaterial {
  const cert = readFileSync(certPath)
  const key = readFileSync(keyPath)
  const chain = parsePEMChain(cert.toString('utf8'), certPath)
  try {
    // Throws when the key does not match the certificate.
    createSecureContext({ cert, key })
  } catch (err) {
    throw new Error(`tls: ${certPath} and ${keyPath} are not a usable pair: ${(err as Error).message}`)
  }
  return { cert, key, chain }
}

/** Gatehouse's own certificate and key (config `tls`), read at start and on change. */
export function openTLSFiles(certPath: string, keyPath: string): TLSFiles {
  const stamp = () =>
    [certPath, keyPath]
      .map((p) => {
        const s = statSync(p)
        return `${s.mtimeMs}:${s.size}:${s.ino}`
      })
      .join('|')
  let material = load(certPath, keyPath)
  let seen = stamp()
  return {
    certPath,
    current: () => material,
    reloadIfChanged() {
      const now = stamp()
      if (now === seen) return undefined
      const next = load(certPath, keyPath)
      seen = now
      material = next
      return next
    },
  }
}
