import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * Shared by the bench servers: listen on 127.0.0.1, print `listening <url>` (the line bench/run.ts waits for),
 * and stop on SIGTERM/SIGINT, or when the parent that spawned us with BENCH_CHILD=1 goes away (stdin closes).
 */
export function serve(server: Server, name: string, port: number): void {
  server.listen(port, '127.0.0.1', () => {
    const address = server.address() as AddressInfo
    process.stdout.write(`${name} listening http://127.0.0.1:${address.port}\n`)
  })
  const stop = () => {
    server.closeAllConnections()
    server.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 1000).unref()
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  if (process.env['BENCH_CHILD'] === '1') {
    process.stdin.once('end', stop)
    process.stdin.once('close', stop)
    process.stdin.resume()
  }
}

export function portFrom(value: string | undefined): number {
  const port = Number(value ?? 0)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`not a port: ${value}`)
  return port
}
