#!/usr/bin/env node
/**
 * `gatehouse <command>`: dev, start, check, users, keys, tokens, sessions, audit, expiry, build-edge.
 * One file per command; this one only dispatches.
 */
import { GatehouseError } from '../core/errors.ts'

const commands: Record<string, () => Promise<{ run(argv: string[]): Promise<number> }>> = {
  dev: () => import('./dev.ts'),
  start: () => import('./start.ts'),
  check: () => import('./check.ts'),
  users: () => import('./users.ts'),
  keys: () => import('./keys.ts'),
  tokens: () => import('./tokens.ts'),
  sessions: () => import('./sessions.ts'),
  audit: () => import('./audit.ts'),
  expiry: () => import('./expiry.ts'),
  'build-edge': () => import('./build-edge.ts'),
}

const USAGE = `Usage: gatehouse <command> [options]

Commands:
  dev     everything embedded (provider, demo app, SQLite) on one port   [--port 8080] [--data .gatehouse]
  start   production mode against any OpenID Connect provider           --config gatehouse.yaml [--no-watch]
          (reloads the file when it changes and on SIGHUP; --no-watch: on SIGHUP only)
  check   validate a config file and print what it would do              --config gatehouse.yaml
  users   manage the embedded provider's users: add | list | remove      [--data DIR | --config FILE]
  keys    Gatehouse's signing keys: list | rotate                        [--data DIR | --config FILE]
  tokens  API tokens: issue | list | revoke | inspect                    [--data DIR | --config FILE]
  sessions  browser sessions: revoke SID | revoke --user SUB | list-revoked [--data DIR | --config FILE]
  audit   security events, oldest first                                [--since 24h] [--json]
  expiry  what expires when, soonest first; exit 1 inside --warn          [--config FILE] [--json] [--warn 30d]
  build-edge  Lambda@Edge bundles, config and keys baked in              --config FILE --out DIR

--config FILE and --data DIR may also come before the command: gatehouse --config FILE tokens list
`

/** Options every command that reads state takes; accepted before the command name too. */
const GLOBAL_WITH_VALUE = new Set(['--config', '-c', '--data'])

/**
 * Splits `gatehouse [global options] <command> [args]` so `gatehouse --config F tokens list` works:
 * global options given before the command are handed to it after its own arguments.
 */
function splitCommand(argv: readonly string[]): { name: string | undefined; rest: string[] } {
  const globals: string[] = []
  let i = 0
  while (i < argv.length) {
    const arg = argv[i]!
    if (GLOBAL_WITH_VALUE.has(arg) && i + 1 < argv.length) {
      globals.push(arg, argv[i + 1]!)
      i += 2
    } else if (arg.startsWith('--config=') || arg.startsWith('--data=')) {
      globals.push(arg)
      i++
    } else break
  }
  return { name: argv[i], rest: [...argv.slice(i + 1), ...globals] }
}

async function main(argv: string[]): Promise<number> {
  const { name, rest } = splitCommand(argv)
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE)
    return name === undefined ? 1 : 0
  }
  const load = commands[name]
  if (load === undefined) {
    process.stderr.write(`gatehouse: unknown command "${name}"\n\n${USAGE}`)
    return 1
  }
  return (await load()).run(rest)
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code
  },
  (err) => {
    if (err instanceof GatehouseError) process.stderr.write(`gatehouse: ${err.message} (${err.code})\n`)
    else process.stderr.write(`gatehouse: ${(err as Error)?.stack ?? String(err)}\n`)
    process.exitCode = 1
  },
)
