#!/usr/bin/env node
// The `gatehouse` command. Plain JavaScript that any Node parses, so an old Node hears which one it
// needs instead of failing on a stack trace. A checkout runs the TypeScript sources; the installed
// package (no src/) runs the compiled dist/.
import { existsSync } from 'node:fs'

const MIN = [22, 18]
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < MIN[0] || (major === MIN[0] && minor < MIN[1])) {
  process.stderr.write(
    `Gatehouse needs Node ${MIN.join('.')} or newer; this is Node ${process.versions.node}.\n`,
  )
  process.exit(2)
}

const sources = new URL('../src/cli/main.ts', import.meta.url)
await import(existsSync(sources) ? sources.href : '../dist/cli/main.js')
