import { generateKeyPairSync, hash, type JsonWebKey, randomBytes } from 'node:crypto'
import type { DatabaseSync } from 'node:sqlite'

/** The private key material an embedded IdP signs with. Persisted, so a restart keeps validating what it issued. */
export interface IdPKeyMaterial {
  /** Private JWKs for oidc-provider's `jwks` option: one RS256 key, then one ES256 key. */
  readonly jwks: { readonly keys: readonly JsonWebKey[] }
  /** Cookie signing keys (Keygrip order: the first signs, all verify). */
  readonly cookieKeys: readonly string[]
}

export interface KeyMaterialOptions {
  /** Clock, Unix epoch milliseconds. Default `Date.now`. */
  now?: () => number
}

type SigningAlg = 'RS256' | 'ES256'
const SIGNING_ALGS: readonly SigningAlg[] = ['RS256', 'ES256']

interface KeyRow {
  kid: string
  alg: string | null
  material: string
}

/**
 * Loads the IdP's signing and cookie keys from `idp_keys` (created when missing), generating any that are
 * missing: an RS256 (RSA 2048) and an ES256 (P-256) signing key and a 256-bit cookie key. Safe when two
 * processes start on the same database file: generation happens inside an IMMEDIATE transaction.
 *
 * The private keys are stored unencrypted: protect the database file like a private key.
 */
export function loadOrCreateKeyMaterial(db: DatabaseSync, options: KeyMaterialOptions = {}): IdPKeyMaterial {
  const now = options.now ?? Date.now

  db.exec(`CREATE TABLE IF NOT EXISTS idp_keys (
    kid TEXT PRIMARY KEY,
    use TEXT NOT NULL,
    alg TEXT,
    material TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT`)

  const selectSigning = db.prepare(
    "SELECT kid, alg, material FROM idp_keys WHERE use = 'sig' ORDER BY created_at DESC, kid",
  )
  const selectCookie = db.prepare(
    "SELECT kid, alg, material FROM idp_keys WHERE use = 'cookie' ORDER BY created_at DESC, kid",
  )
  const insert = db.prepare(
    'INSERT INTO idp_keys (kid, use, alg, material, created_at) VALUES (?, ?, ?, ?, ?)',
  )

  db.exec('BEGIN IMMEDIATE')
  try {
    const present = new Set((selectSigning.all() as unknown as KeyRow[]).map((row) => row.alg))
    for (const alg of SIGNING_ALGS) {
      if (present.has(alg)) continue
      const { kid, jwk } = generateSigningKey(alg)
      insert.run(kid, 'sig', alg, JSON.stringify(jwk), now())
    }
    if (selectCookie.all().length === 0) {
      insert.run(
        `cookie-${randomBytes(8).toString('hex')}`,
        'cookie',
        null,
        randomBytes(32).toString('base64url'),
        now(),
      )
    }
    db.exec('COMMIT')
  } catch (error) {
    db.exec('ROLLBACK')
    throw error
  }

  const signing = selectSigning.all() as unknown as KeyRow[]
  // oidc-provider signs with the first key that fits the algorithm; RS256 first keeps it the ID token default.
  const keys = SIGNING_ALGS.flatMap((alg) =>
    signing.filter((row) => row.alg === alg).map((row) => JSON.parse(row.material) as JsonWebKey),
  )
  const cookieKeys = (selectCookie.all() as unknown as KeyRow[]).map((row) => row.material)
  return Object.freeze({ jwks: Object.freeze({ keys }), cookieKeys: Object.freeze(cookieKeys) })
}

function generateSigningKey(alg: SigningAlg): { kid: string; jwk: JsonWebKey } {
  const { privateKey } =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = privateKey.export({ format: 'jwk' })
  const kid = thumbprint(jwk)
  return { kid, jwk: { ...jwk, kid, alg, use: 'sig' } }
}

// RFC 7638 JWK thumbprint: SHA-256 over the required public members in lexicographic order.
function thumbprint(jwk: JsonWebKey): string {
  const members =
    jwk.kty === 'RSA'
      ? { e: jwk.e, kty: jwk.kty, n: jwk.n }
      : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
  return hash('sha256', JSON.stringify(members), 'base64url')
}
