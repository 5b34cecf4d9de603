import { randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto'
import type { DatabaseSync } from 'node:sqlite'

import {
  InvalidPasswordError,
  InvalidUserAttributeError,
  InvalidUsernameError,
  UserExistsError,
} from './errors.ts'

/** A user of the embedded IdP as the rest of Gatehouse sees it: never carries the password hash. */
export interface User {
  /** Stable random identifier, the OIDC `sub`. Never the username, so a rename cannot hand over an identity. */
  readonly sub: string
  readonly username: string
  readonly email?: string
  /** Whether `email` is vouched for (the `email_verified` claim). */
  readonly emailVerified: boolean
  readonly name?: string
  readonly groups: readonly string[]
  /** Unix epoch milliseconds. */
  readonly createdAtMs: number
}

export interface UserAttributes {
  email?: string
  /** Default `false`: an address typed in by an administrator is not proof the user controls it. */
  emailVerified?: boolean
  name?: string
  /** Each 1–128 printable ASCII characters without spaces or commas; duplicates are dropped. */
  groups?: readonly string[]
}

/** scrypt cost parameters. Stored with every hash, so changing them re-hashes on the next successful sign-in. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number
  readonly r: number
  readonly p: number
}

export interface UserStoreOptions {
  /**
   * Default `{ N: 2 ** 15, r: 8, p: 3 }` (OWASP's 32 MiB scrypt setting; 2 ** 17 would need 128 MiB per
   * concurrent sign-in). Tests may lower it.
   */
  scrypt?: ScryptParams
  /** Clock, Unix epoch milliseconds. Default `Date.now`. */
  now?: () => number
}

export interface UserStore {
  /**
   * Creates a user. Throws {@link UserExistsError}, {@link InvalidUsernameError}, {@link InvalidPasswordError} or
   * {@link InvalidUserAttributeError}.
   */
  add(username: string, password: string, attributes?: UserAttributes): Promise<User>
  /** Every user, ordered by username. */
  list(): User[]
  /** Deletes a user; `false` when there was none. Tokens already issued to them fail their next refresh. */
  remove(username: string): boolean
  find(username: string): User | undefined
  findById(sub: string): User | undefined
  /**
   * The user when the password matches, else `null`. An unknown username costs the same scrypt as a known one,
   * so response time does not tell which usernames exist.
   */
  verify(username: string, password: string): Promise<User | null>
}

const USERNAME = /^[A-Za-z0-9._@-]{1,64}$/
const GROUP = /^[\x21-\x2b\x2d-\x7e]{1,128}$/
const EMAIL = /^[^\s@]+@[^\s@]+$/
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const CONTROL = /[\x00-\x1f\x7f]/
const PASSWORD_MIN = 8
const PASSWORD_MAX = 1024
const SALT_BYTES = 16
const KEY_BYTES = 32
const DEFAULT_SCRYPT: ScryptParams = Object.freeze({ N: 2 ** 15, r: 8, p: 3 })

interface UserRow {
  sub: string
  username: string
  password_hash: string
  email: string | null
  email_verified: number
  name: string | null
  groups: string
  created_at: number
}

/**
 * A user store on node:sqlite. Creates its table `idp_users` when missing; usernames are unique regardless of
 * ASCII case (`Alice` and `alice` are the same user).
 *
 * @example
 * ```ts
 * const users = createUserStore(new DatabaseSync('gatehouse.db'))
 * await users.add('alice', 'correct horse', { email: 'alice@example.com', groups: ['admins'] })
 * const alice = await users.verify('alice', 'correct horse') // User | null
 * ```
 */
export function createUserStore(db: DatabaseSync, options: UserStoreOptions = {}): UserStore {
  const params = Object.freeze({ ...(options.scrypt ?? DEFAULT_SCRYPT) })
  checkScryptParams(params)
  const now = options.now ?? Date.now
  // Salt for the decoy hash computed for unknown usernames; its output is never compared to anything.
  const decoySalt = randomBytes(SALT_BYTES)

  db.exec(`CREATE TABLE IF NOT EXISTS idp_users (
    sub TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    email TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    groups TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
  ) STRICT`)

  const selectByUsername = db.prepare('SELECT * FROM idp_users WHERE username = ?')
  const selectBySub = db.prepare('SELECT * FROM idp_users WHERE sub = ?')
  const selectAll = db.prepare('SELECT * FROM idp_users ORDER BY username')
  const insert = db.prepare(`INSERT INTO idp_users
    (sub, username, password_hash, email, email_verified, name, groups, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
  const deleteByUsername = db.prepare('DELETE FROM idp_users WHERE username = ?')
  const updateHash = db.prepare('UPDATE idp_users SET password_hash = ? WHERE sub = ? AND password_hash = ?')

  function rowByUsername(username: string): UserRow | undefined {
    if (!USERNAME.test(username)) return undefined
    return selectByUsername.get(username) as UserRow | undefined
  }

  return {
    async add(username, password, attributes = {}) {
      if (typeof username !== 'string' || !USERNAME.test(username)) {
        throw new InvalidUsernameError('username must be 1-64 characters of A-Z a-z 0-9 . _ @ -')
      }
      checkPassword(password)
      const { email, emailVerified, name, groups } = checkAttributes(attributes)
      if (rowByUsername(username)) throw new UserExistsError(`user "${username}" already exists`)

      const passwordHash = await hashPassword(password, params)
      const sub = randomUUID()
      const createdAtMs = now()
      // ON CONFLICT DO NOTHING: a concurrent add of the same name between the check and here lands as 0 changes.
      const { changes } = insert.run(
        sub,
        username,
        passwordHash,
        email ?? null,
        emailVerified ? 1 : 0,
        name ?? null,
        JSON.stringify(groups),
        createdAtMs,
      )
      if (Number(changes) === 0) throw new UserExistsError(`user "${username}" already exists`)
      return toUser({
        sub,
        username,
        password_hash: '',
        email: email ?? null,
        email_verified: emailVerified ? 1 : 0,
        name: name ?? null,
        groups: JSON.stringify(groups),
        created_at: createdAtMs,
      })
    },

    list() {
      return (selectAll.all() as unknown as UserRow[]).map(toUser)
    },

    remove(username) {
      if (!USERNAME.test(username)) return false
      return Number(deleteByUsername.run(username).changes) > 0
    },

    find(username) {
      const row = rowByUsername(username)
      return row ? toUser(row) : undefined
    },

    findById(sub) {
      const row = selectBySub.get(sub) as UserRow | undefined
      return row ? toUser(row) : undefined
    },

    async verify(username, password) {
      // Over-long input is refused before any work: the length says nothing about which usernames exist.
      if (typeof password !== 'string' || password.length > PASSWORD_MAX) return null
      const row = typeof username === 'string' ? rowByUsername(username) : undefined
      const stored = row ? parseHash(row.password_hash) : undefined
      if (!row || !stored) {
        await derive(password, decoySalt, params)
        return null
      }
      const derived = await derive(password, stored.salt, stored.params)
      if (derived.length !== stored.hash.length || !timingSafeEqual(derived, stored.hash)) return null
      if (!sameParams(stored.params, params)) {
        // Re-hash with the current cost; the WHERE on the old hash keeps a concurrent password change intact.
        updateHash.run(await hashPassword(password, params), row.sub, row.password_hash)
      }
      return toUser(row)
    },
  }
}

function toUser(row: UserRow): User {
  const user: { -readonly [K in keyof User]: User[K] } = {
    sub: row.sub,
    username: row.username,
    emailVerified: row.email_verified === 1,
    groups: Object.freeze(JSON.parse(row.groups) as string[]),
    createdAtMs: row.created_at,
  }
  if (row.email !== null) user.email = row.email
  if (row.name !== null) user.name = row.name
  return Object.freeze(user)
}

function checkScryptParams({ N, r, p }: ScryptParams): void {
  const ok =
    Number.isInteger(N) && N > 1 && (N & (N - 1)) === 0 && Number.isInteger(r) && r > 0 && Number.isInteger(p)
  if (!ok || p <= 0) {
    throw new TypeError(
      `options.scrypt: expected { N: power of two > 1, r: positive integer, p: positive integer }, found ${JSON.stringify({ N, r, p })}`,
    )
  }
}

function checkPassword(password: unknown): asserts password is string {
  if (typeof password !== 'string' || password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
    throw new InvalidPasswordError(`password must be ${PASSWORD_MIN}-${PASSWORD_MAX} characters`)
  }
}

function checkAttributes(attributes: UserAttributes): {
  email?: string
  emailVerified: boolean
  name?: string
  groups: string[]
} {
  const { email, emailVerified = false, name, groups = [] } = attributes
  if (email !== undefined && (typeof email !== 'string' || email.length > 254 || !EMAIL.test(email))) {
    throw new InvalidUserAttributeError('email must look like local@domain, at most 254 characters')
  }
  if (typeof emailVerified !== 'boolean') {
    throw new InvalidUserAttributeError('emailVerified must be a boolean')
  }
  if (name !== undefined && (typeof name !== 'string' || name.length > 256 || CONTROL.test(name))) {
    throw new InvalidUserAttributeError('name must be at most 256 characters without control characters')
  }
  if (!Array.isArray(groups) || !groups.every((group) => typeof group === 'string' && GROUP.test(group))) {
    throw new InvalidUserAttributeError(
      'groups must be an array of 1-128 printable ASCII characters without spaces or commas',
    )
  }
  const result: { email?: string; emailVerified: boolean; name?: string; groups: string[] } = {
    emailVerified,
    groups: [...new Set(groups)],
  }
  if (email !== undefined) result.email = email
  if (name !== undefined) result.name = name
  return result
}

function derive(password: string, salt: Buffer, { N, r, p }: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // maxmem: scrypt needs 128 * N * r bytes; node's default cap (32 MiB) is exactly that for N=2^15, r=8.
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, { N, r, p, maxmem: 256 * N * r }, (error, key) =>
      error ? reject(error) : resolve(key),
    )
  })
}

// PHC string format: $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>, base64 without padding.
async function hashPassword(password: string, params: ScryptParams): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const hash = await derive(password, salt, params)
  return `$scrypt$ln=${Math.log2(params.N)},r=${params.r},p=${params.p}$${b64(salt)}$${b64(hash)}`
}

function parseHash(encoded: string): { params: ScryptParams; salt: Buffer; hash: Buffer } | undefined {
  const match = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(
    encoded,
  )
  if (!match) return undefined
  const [, ln, r, p, salt, hash] = match
  return {
    params: { N: 2 ** Number(ln), r: Number(r), p: Number(p) },
    salt: Buffer.from(salt!, 'base64'),
    hash: Buffer.from(hash!, 'base64'),
  }
}

function sameParams(a: ScryptParams, b: ScryptParams): boolean {
  return a.N === b.N && a.r === b.r && a.p === b.p
}

function b64(bytes: Buffer): string {
  return bytes.toString('base64').replace(/=+$/, '')
}
