import { connect, createServer, type Socket } from 'node:net'

export interface TCPProxy {
  readonly port: number
  /** Connections accepted so far. */
  connections(): number
  /** Drop every open connection and refuse new ones (accepted, then reset): the service is "down". */
  cut(): void
  /** Pass connections again. */
  restore(): void
  close(): Promise<void>
}

/**
 * A TCP proxy on 127.0.0.1 in front of a service (PostgreSQL, Redis) that a test can cut and restore,
 * so a drill takes the service away from Gatehouse without stopping the shared one.
 */
export async function startTCPProxy(target: { host: string; port: number }, port = 0): Promise<TCPProxy> {
  const open = new Set<Socket>()
  let down = false
  let accepted = 0
  const server = createServer((client) => {
    accepted++
    if (down) {
      client.resetAndDestroy()
      return
    }
    const upstream = connect(target.port, target.host)
    open.add(client)
    open.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      open.delete(client)
      open.delete(upstream)
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('close', drop)
    upstream.on('close', drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const address = server.address()
  return {
    port: typeof address === 'object' && address !== null ? address.port : port,
    connections: () => accepted,
    cut() {
      down = true
      for (const s of open) s.destroy()
      open.clear()
    },
    restore() {
      down = false
    },
    async close() {
      down = true
      for (const s of open) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
