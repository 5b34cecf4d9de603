import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { createServer as createNetServer } from 'node:net'

/** A free loopback port (for URLs that must be known before a server starts, like an issuer or redirect URI). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

export interface RecordingUpstream {
  url: string
  server: Server
  requests: Array<{ method: string; url: string; headers: IncomingHttpHeaders }>
  close(): Promise<void>
}

/** An upstream app that records every request it receives and answers 200 with JSON. */
export async function startRecordingUpstream(): Promise<RecordingUpstream> {
  const requests: RecordingUpstream['requests'] = []
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': 'app=1; Path=/' })
      res.end(JSON.stringify({ path: req.url, user: req.headers['x-auth-request-user'] ?? null }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const a = server.address()
  return {
    url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`,
    server,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}
