import pino from 'pino'
import type { Logger } from './core/ports.ts'

/** JSON lines on stdout (pino). Nothing passed to it may contain a token, secret or cookie value. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'gatehouse' },
    redact: ['req.headers.cookie', 'req.headers.authorization'],
  })
}
