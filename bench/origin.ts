/**
 * Benchmark origin: answers every request with a 1 KB body (request bodies are read and discarded).
 *
 * Usage: `node bench/origin.ts [port]` (or PORT=…); prints `origin listening http://127.0.0.1:<port>`.
 */
import { createServer } from 'node:http'
import { portFrom, serve } from './child.ts'

const BODY = Buffer.alloc(1024, 'a')
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) }

const server = createServer((req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200, HEADERS)
    res.end(BODY)
    return
  }
  req.resume()
  req.once('end', () => {
    res.writeHead(200, HEADERS)
    res.end(BODY)
  })
})
// Longer than any run, so a benchmark never races an idle-connection timeout.
server.keepAliveTimeout = 120_000

serve(server, 'origin', portFrom(process.argv[2] ?? process.env['PORT']))
