/**
 * The Terraform module for the edge deployment is formatted. `terraform validate` needs the providers,
 * which `terraform init` cannot download offline, so only formatting is checked here.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { test } from 'node:test'
import { promisify } from 'node:util'

const TERRAFORM = ['/usr/local/bin/terraform', '/usr/bin/terraform'].find((p) => existsSync(p))
const MODULE = new URL('../../../deploy/terraform/aws-edge/', import.meta.url).pathname

test('deploy/terraform/aws-edge is terraform fmt clean', {
  skip: TERRAFORM === undefined ? 'terraform is not installed' : false,
}, async () => {
  const r = await promisify(execFile)(TERRAFORM!, ['fmt', '-check', '-recursive', '-no-color', MODULE]).then(
    () => ({ code: 0, stdout: '' }),
    (err: { code: number; stdout: string }) => err,
  )
  assert.equal(r.code, 0, `not formatted: ${r.stdout}`)
  for (const file of ['main.tf', 'variables.tf', 'outputs.tf', 'versions.tf', 'README.md']) {
    assert.ok(existsSync(MODULE + file), file)
  }
})
