import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createUserStore } from '../idp/users.ts'
import { openDatabase, resolveDataDir } from './data-dir.ts'

const USAGE = `Usage:
  gatehouse users add NAME [--email E] [--name N] [--groups a,b] [--password-stdin]
  gatehouse users list [--json]
  gatehouse users remove NAME
Options: --data DIR (default .gatehouse) or --config FILE (uses its data_dir)
Without --password-stdin a random password is generated and printed once.
`

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      data: { type: 'string' },
      config: { type: 'string', short: 'c' },
      email: { type: 'string' },
      name: { type: 'string' },
      groups: { type: 'string' },
      'password-stdin': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  })
  const [action, username] = positionals
  if (action === undefined || !['add', 'list', 'remove'].includes(action)) {
    process.stderr.write(USAGE)
    return 1
  }
  const db = openDatabase(resolveDataDir(values))
  try {
    const users = createUserStore(db)
    if (action === 'list') {
      const list = users.list()
      if (values.json) {
        process.stdout.write(JSON.stringify(list, null, 2) + '\n')
      } else {
        for (const u of list) {
          process.stdout.write(
            `${u.username.padEnd(20)} ${(u.email ?? '-').padEnd(28)} ${u.groups.join(',') || '-'}\n`,
          )
        }
        if (list.length === 0) process.stdout.write('(no users)\n')
      }
      return 0
    }
    if (username === undefined) {
      process.stderr.write(USAGE)
      return 1
    }
    if (action === 'remove') {
      if (!users.remove(username)) {
        process.stderr.write(`gatehouse users: no user "${username}"\n`)
        return 1
      }
      process.stdout.write(`removed ${username}\n`)
      return 0
    }
    const generated = !values['password-stdin']
    const password = generated ? randomBytes(12).toString('base64url') : await readStdin()
    try {
      await users.add(username, password, {
        email: values.email,
        name: values.name,
        groups: values.groups
          ? values.groups
              .split(',')
              .map((g) => g.trim())
              .filter(Boolean)
          : [],
      })
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code !== undefined) {
        process.stderr.write(`gatehouse users: ${(err as Error).message} (${code})\n`)
        return 1
      }
      throw err
    }
    process.stdout.write(
      `added ${username}${generated ? `\npassword: ${password}\n(shown once; it is stored only as a scrypt hash)` : ''}\n`,
    )
    return 0
  } finally {
    db.close()
  }
}
