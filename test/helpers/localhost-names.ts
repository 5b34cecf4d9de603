import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { connect } from 'node:net'
import { Agent, setGlobalDispatcher } from 'undici'

/** `*.localhost` names are this machine (RFC 6761 §6.3), which Node's resolver does not know; others resolve as usual. */
export function installTestHosts(): void {
  const lookup = (
    hostname: string,
    options: { all?: boolean },
    callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void,
  ) => {
    if (!hostname.endsWith('.localhost')) return dnsLookup(hostname, options as never, callback as never)
    if (options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }])
    return callback(null, '127.0.0.1', 4)
  }
  setGlobalDispatcher(new Agent({ connect: { lookup: lookup as never } }))
}

/** One raw HTTP/1.1 exchange: the request line goes out exactly as written (no client normalises it). */
export function rawRequest(port: number, head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer within 5 s')))
    socket.on('data', (d) => {
      text += d.toString('latin1')
    })
    socket.on('end', () => resolve({ status: Number(text.slice(9, 12)), text }))
    socket.on('error', reject)
    socket.write(`${head}connection: close\r\n\r\n`)
  })
}
