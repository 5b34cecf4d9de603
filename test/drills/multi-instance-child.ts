/**
 * One Gatehouse instance of the multi-instance drill, in its own process. The parent sends the config
 * (GH_DRILL_CONFIG) and drives it over the IPC channel: issue, revoke, rotate, keys, issue-loop.
 */
import { startGateway } from '../../src/app.ts'
import { validateConfig } from '../../src/config/load.ts'
import { GatehouseError } from '../../src/core/errors.ts'
import { silentLogger } from '../../src/core/ports.ts'
import { createLogger } from '../../src/log.ts'

type Command = { id: number; cmd: string; [k: string]: unknown }

const config = validateConfig(JSON.parse(process.env['GH_DRILL_CONFIG']!), 'drill')
const gateway = await startGateway(config, {
  baseDir: process.cwd(),
  log: process.env['GH_DRILL_LOG'] ? createLogger('info') : silentLogger,
  admin: { host: '127.0.0.1', port: 0 },
  refreshRevocationsMs: Number(process.env['GH_DRILL_RELOAD_MS'] ?? 5000),
  keyTickMs: 3_600_000,
})
const send = (m: object) => process.send!(m)

process.on('message', async (m: Command) => {
  try {
    switch (m.cmd) {
      case 'issue': {
        const issued = await gateway.services.tokens.issue({ subject: String(m['subject']) })
        send({ id: m.id, token: issued.token, jti: issued.record.jti })
        break
      }
      case 'issue-loop': {
        // Issues until killed, telling the parent each token the store has accepted.
        send({ id: m.id, started: true })
        for (let i = 0; ; i++) {
          const issued = await gateway.services.tokens.issue({ subject: `loop-${i}` })
          send({ event: 'issued', token: issued.token, jti: issued.record.jti })
        }
      }
      case 'revoke': {
        const r = await gateway.services.tokens.revoke(String(m['jti']), false)
        send({ id: m.id, revoked: r.revoked })
        break
      }
      case 'rotate': {
        send({ id: m.id, changes: await gateway.services.keyRing.rotate() })
        break
      }
      case 'tick': {
        send({ id: m.id, changes: await gateway.services.keyRing.tick() })
        break
      }
      case 'keys': {
        await gateway.services.keyRing.reload().catch(() => {})
        send({ id: m.id, keys: gateway.services.keyRing.list() })
        break
      }
      case 'metrics': {
        send({ id: m.id, text: await gateway.metrics.registry.metrics() })
        break
      }
      case 'close': {
        await gateway.close()
        send({ id: m.id, closed: true })
        process.exit(0)
      }
    }
  } catch (err) {
    send({
      id: m.id,
      error: err instanceof GatehouseError ? err.code : 'ERR_UNEXPECTED',
      message: (err as Error).message,
    })
  }
})

send({ ready: true, url: gateway.url })
