import type { IncomingMessage } from 'node:http'

export type FormBodyResult =
  | { kind: 'ok'; fields: URLSearchParams }
  | { kind: 'unsupported_media_type' }
  | { kind: 'too_large' }

/**
 * Reads an `application/x-www-form-urlencoded` request body of at most `limitBytes` bytes. Stops reading (and
 * lets the caller answer 413) as soon as the limit is passed, whatever Content-Length claimed.
 */
export async function readFormBody(req: IncomingMessage, limitBytes: number): Promise<FormBodyResult> {
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') return { kind: 'unsupported_media_type' }
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limitBytes) return { kind: 'too_large' }

  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const cleanup = () => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limitBytes) {
        // Stop reading without destroying the socket, so the caller can still answer 413 (with
        // `connection: close`, which ends the connection and the rest of the upload with it).
        cleanup()
        req.pause()
        resolve({ kind: 'too_large' })
        return
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resolve({ kind: 'ok', fields: new URLSearchParams(Buffer.concat(chunks).toString('utf8')) })
    }
    const onError = (error: Error) => {
      cleanup()
      reject(error)
    }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  })
}
