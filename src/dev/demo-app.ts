import { createServer, type Server } from 'node:http'
import { escapeHtml } from '../core/encoding.ts'

const SHOWN = [
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-preferred-username',
  'x-auth-request-groups',
  'x-auth-request-scopes',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
]

/**
 * The app behind the gateway in `gatehouse dev`: a page that shows who you are, from the identity
 * headers Gatehouse sent. `GET /api/whoami` answers the same as JSON.
 */
export function createDemoApp(options: { signOutPath: string }): Server {
  return createServer((req, res) => {
    const seen: Record<string, string> = {}
    for (const name of SHOWN) {
      const v = req.headers[name]
      if (typeof v === 'string') seen[name] = v
    }
    if ((req.url ?? '/').startsWith('/api/whoami')) {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
      res.end(JSON.stringify({ headers: seen, cookie: req.headers.cookie ?? null }))
      return
    }
    const user = seen['x-auth-request-preferred-username'] ?? seen['x-auth-request-user'] ?? 'stranger'
    const rows = Object.entries(seen)
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`)
      .join('\n')
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
    res.end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gatehouse demo app</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}
th{text-align:left;padding-right:1rem;font-weight:600}td{font-family:monospace}</style></head>
<body><main>
<h1 id="greeting">Hello, ${escapeHtml(user)}</h1>
<p>This page is the demo app behind Gatehouse. It never saw a password or a token: only these headers.</p>
<table id="identity">${rows}</table>
<p>You asked for <code id="path">${escapeHtml(req.url ?? '/')}</code>.</p>
<p><a id="sign-out" href="${escapeHtml(options.signOutPath)}">Sign out</a></p>
</main></body></html>
`)
  })
}
