import { spawn } from 'node:child_process'
import { join } from 'node:path'

/** src/cli/main.ts, the `gatehouse` command. */
export const CLI_MAIN = join(import.meta.dirname, '../../src/cli/main.ts')

/**
 * Runs `gatehouse <args>` in a child process, asynchronously: servers the command talks to may run in
 * the test's own process and must keep answering while it runs (spawnSync would block them).
 */
export function runCli(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
    })
    child.stderr.on('data', (d) => {
      stderr += d
    })
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}
