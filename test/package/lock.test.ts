/**
 * `npm ci` installs from package-lock.json alone and refuses a lock that is out of step with
 * package.json, which includes every platform's optional binary (Biome's and esbuild's): a lock written
 * without them works for `npm install` here and breaks `npm ci` on macOS, Windows, Arm or in a container.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { REPO_ROOT } from '../helpers/pack.ts'

interface LockEntry {
  version?: string
  bin?: Record<string, string>
  optionalDependencies?: Record<string, string>
}

const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, LockEntry>
}
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'))

test('the lock lists every optional platform package of every locked package', () => {
  const missing: string[] = []
  for (const [path, entry] of Object.entries(lock.packages)) {
    for (const name of Object.keys(entry.optionalDependencies ?? {})) {
      // npm resolves a dependency from the nearest node_modules up the tree.
      const found = [`${path}/node_modules/${name}`, `node_modules/${name}`].some((p) => p in lock.packages)
      if (!found) missing.push(`${name} (for ${path})`)
    }
  }
  assert.deepEqual(missing, [])
  for (const platform of ['darwin-arm64', 'linux-x64', 'linux-arm64', 'win32-x64']) {
    assert.ok(`node_modules/@biomejs/cli-${platform}` in lock.packages, `Biome for ${platform}`)
    assert.ok(`node_modules/@esbuild/${platform}` in lock.packages, `esbuild for ${platform}`)
  }
})

test('the lock is in step with package.json', () => {
  const root = lock.packages['']!
  // npm writes bin paths without a leading ./
  const bin = Object.fromEntries(Object.entries(pkg.bin).map(([k, v]) => [k, String(v).replace(/^\.\//, '')]))
  assert.deepEqual(root.bin, bin, 'bin')
  for (const field of ['dependencies', 'devDependencies'] as const) {
    assert.deepEqual((root as Record<string, unknown>)[field], pkg[field], field)
  }
})
