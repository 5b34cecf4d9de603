import { request } from 'undici'

/**
 * A `fetch` that sends what a browser would: Node's fetch always says `Sec-Fetch-Mode: cors`, which
 * Gatehouse rightly treats as a script's request (401, no redirect). Here a GET that accepts HTML is
 * a navigation (`Sec-Fetch-Mode: navigate`); anything else sends no Sec-Fetch header, like curl.
 */
export const browserFetch: typeof fetch = async (input, init = {}) => {
  const url = input instanceof Request ? input.url : String(input)
  const method = (init.method ?? 'GET').toUpperCase()
  const headers: Record<string, string> = {}
  new Headers(init.headers).forEach((v, k) => {
    headers[k] = v
  })
  if (method === 'GET' && (headers['accept'] ?? '').includes('text/html'))
    headers['sec-fetch-mode'] = 'navigate'
  let body: string | undefined
  if (init.body instanceof URLSearchParams) {
    body = init.body.toString()
    headers['content-type'] ??= 'application/x-www-form-urlencoded'
  } else if (typeof init.body === 'string') {
    body = init.body
  }
  const r = await request(url, { method: method as 'GET', headers, body })
  const out = new Headers()
  for (const [k, v] of Object.entries(r.headers)) {
    if (Array.isArray(v)) for (const x of v) out.append(k, x)
    else if (v !== undefined) out.append(k, v)
  }
  const nullBody = r.statusCode === 204 || r.statusCode === 304 || method === 'HEAD'
  const data = nullBody ? null : Buffer.from(await r.body.arrayBuffer())
  if (nullBody) await r.body.dump()
  return new Response(data, { status: r.statusCode, headers: out })
}
