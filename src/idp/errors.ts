/**
 * Base class of the errors the embedded IdP throws on purpose. `code` is stable and never reused, so callers
 * (the admin CLI, tests) branch on it rather than on the message.
 *
 * @example
 * ```ts
 * try {
 *   await users.add('alice', 'correct horse')
 * } catch (error) {
 *   if (error instanceof IdPError && error.code === 'ERR_USER_EXISTS') console.error('already there')
 *   else throw error
 * }
 * ```
 */
export class IdPError extends Error {
  readonly code: string = 'ERR_IDP'

  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = new.target.name
  }
}

/** A user with that username (compared case-insensitively) already exists. */
export class UserExistsError extends IdPError {
  static readonly code = 'ERR_USER_EXISTS'
  override readonly code = 'ERR_USER_EXISTS'
}

/** The username is not 1–64 characters of `[A-Za-z0-9._@-]`. */
export class InvalidUsernameError extends IdPError {
  static readonly code = 'ERR_INVALID_USERNAME'
  override readonly code = 'ERR_INVALID_USERNAME'
}

/** The password is shorter than 8 or longer than 1024 characters. */
export class InvalidPasswordError extends IdPError {
  static readonly code = 'ERR_INVALID_PASSWORD'
  override readonly code = 'ERR_INVALID_PASSWORD'
}

/** `email`, `name` or `groups` does not have the expected shape. */
export class InvalidUserAttributeError extends IdPError {
  static readonly code = 'ERR_INVALID_USER_ATTRIBUTE'
  override readonly code = 'ERR_INVALID_USER_ATTRIBUTE'
}
