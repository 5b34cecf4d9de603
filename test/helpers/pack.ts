// The project as users get it: `npm pack` (which builds dist/ through prepack) and the tarball installed
// with npm into a temporary folder, dependencies from the registry or npm's own cache.
import { spawn } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'

export const REPO_ROOT = join(import.meta.dirname, '../..')

export interface RunResult {
  status: number | null
  stdout: string
  stderr: string
}

/**
 * The environment a user's shell would give a child: this Node first on PATH (so `#!/usr/bin/env node`
 * and npm find it) and none of the npm_* variables of an enclosing `npm test`.
 */
export function userEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.toLowerCase().startsWith('npm_')) env[k] = v
  }
  env.PATH = `${dirname(process.execPath)}${delimiter}${env.PATH ?? ''}`
  env.npm_config_update_notifier = 'false'
  return { ...env, ...extra }
}

/**
 * Runs a command asynchronously (servers it talks to may live in the test's own process), killing it
 * after `timeoutMs`. Resolves with its exit status and output; never rejects for a non-zero exit.
 */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? userEnv() })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
    })
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs} ms]`
      child.kill('SIGKILL')
    }, options.timeoutMs ?? 120_000)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, stdout, stderr })
    })
  })
}

/** Output for an assertion message. */
export function shown(r: RunResult): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout.slice(-4000)}\n--- stderr\n${r.stderr.slice(-4000)}`
}

/** `npm pack` of this checkout into `dest` (prepack builds dist/ first); the tarball's path. */
export async function packProject(dest: string): Promise<string> {
  const r = await run('npm', ['pack', '--pack-destination', dest], { cwd: REPO_ROOT, timeoutMs: 180_000 })
  if (r.status !== 0) throw new Error(`npm pack failed: ${shown(r)}`)
  const tgz = readdirSync(dest).find((f) => f.endsWith('.tgz'))
  if (tgz === undefined) throw new Error(`npm pack wrote no tarball: ${shown(r)}`)
  return join(dest, tgz)
}

/**
 * Installs `specs` (the tarball, and anything else a consumer would add) into an empty project at `dir`,
 * as `npm install` does for a user: production dependencies only, no audit, cache preferred.
 */
export async function installInto(dir: string, specs: readonly string[]): Promise<void> {
  writeFileSync(join(dir, 'package.json'), '{ "name": "consumer", "private": true, "type": "module" }\n')
  const r = await run(
    'npm',
    ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...specs],
    { cwd: dir, timeoutMs: 300_000 },
  )
  if (r.status !== 0) throw new Error(`npm install failed: ${shown(r)}`)
}
