import { parseArgs } from 'node:util'
import { openState } from './state.ts'

const USAGE = `Usage:
  gatehouse keys list [--json]
  gatehouse keys rotate
Options: --config FILE, or --data DIR in dev (default .gatehouse)
`

const iso = (seconds: number) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z')

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      data: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  })
  const [action] = positionals
  if (action !== 'list' && action !== 'rotate') {
    process.stderr.write(USAGE)
    return 1
  }
  const state = await openState(values)
  try {
    if (action === 'rotate') {
      const changes = await state.keyRing.rotate()
      for (const c of changes) process.stdout.write(`${c}\n`)
    }
    const keys = state.keyRing.list()
    if (values.json) {
      process.stdout.write(`${JSON.stringify(keys, null, 2)}\n`)
      return 0
    }
    process.stdout.write(
      `${'kid'.padEnd(18)} ${'alg'.padEnd(6)} ${'state'.padEnd(8)} ${'signs from'.padEnd(21)} ${'signs until'.padEnd(21)} removed after\n`,
    )
    for (const k of keys) {
      process.stdout.write(
        `${k.kid.padEnd(18)} ${k.alg.padEnd(6)} ${k.state.padEnd(8)} ${iso(k.activatesAt).padEnd(21)} ${iso(k.retiresAt).padEnd(21)} ${iso(k.removeAt)}\n`,
      )
    }
    return 0
  } finally {
    state.close()
  }
}
