/**
 * The Terraform module for the edge deployment is formatted, and valid. `terraform validate` needs the
 * AWS provider, which `terraform init` cannot download offline: it runs when terraform is installed and
 * a local plugin mirror holding hashicorp/aws exists (TF_PLUGIN_DIR, default /opt/tf-plugins), and is
 * skipped otherwise, saying what is missing. The module takes two AWS provider configurations
 * (`configuration_aliases`), so it is validated the way it is used: called from a root module that
 * passes both. Everything Terraform writes (lock file, .terraform data, CLI config) stays in a temp dir.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'

const run = promisify(execFile)
const TERRAFORM = ['/usr/local/bin/terraform', '/usr/bin/terraform'].find((p) => existsSync(p))
const MODULE = new URL('../../../deploy/terraform/aws-edge/', import.meta.url).pathname
const PLUGIN_DIR = process.env.TF_PLUGIN_DIR || '/opt/tf-plugins'
const AWS_PROVIDER = join(PLUGIN_DIR, 'registry.terraform.io', 'hashicorp', 'aws')
/** Each terraform command; init of the AWS provider takes a few seconds. */
const COMMAND_TIMEOUT_MS = 120_000

/** Why validate cannot run here, or false when it can. */
function validateSkip(): string | false {
  if (TERRAFORM === undefined)
    return 'terraform is not installed (looked for /usr/local/bin/terraform, /usr/bin/terraform)'
  if (!existsSync(PLUGIN_DIR))
    return `no Terraform plugin mirror at ${PLUGIN_DIR} (set TF_PLUGIN_DIR to one holding registry.terraform.io/hashicorp/aws)`
  if (!existsSync(AWS_PROVIDER))
    return `the plugin mirror ${PLUGIN_DIR} has no hashicorp/aws provider (${AWS_PROVIDER} is missing)`
  return false
}

/** The caller's environment without any TF_* setting, plus ours: nothing read or written outside `dir`. */
function isolatedEnv(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TF_')) env[k] = v
  return {
    ...env,
    TF_IN_AUTOMATION: '1',
    TF_INPUT: '0',
    TF_CLI_CONFIG_FILE: '/dev/null',
    TF_DATA_DIR: join(dir, '.terraform-data'),
    CHECKPOINT_DISABLE: '1',
  }
}

type Result = { code: number; stdout: string; stderr: string }

const terraform = (args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Result> =>
  run(TERRAFORM!, args, { cwd, env, timeout: COMMAND_TIMEOUT_MS }).then(
    (r) => ({ code: 0, ...r }),
    (err: { code: number | string | null; killed?: boolean; stdout: string; stderr: string }) => ({
      code: typeof err.code === 'number' ? err.code : -1,
      stdout: err.stdout,
      stderr: err.killed ? `timed out after ${COMMAND_TIMEOUT_MS} ms\n${err.stderr}` : err.stderr,
    }),
  )

/** A root module calling the module as its README shows, with both provider configurations. */
const ROOT_MODULE = `provider "aws" {
  region = "eu-west-1"
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
}

module "gatehouse" {
  source    = "./aws-edge"
  providers = { aws = aws, aws.us_east_1 = aws.us_east_1 }

  bundles_dir           = "\${path.root}/dist/edge"
  domain_name           = "app.example.com"
  acm_certificate_arn   = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  origin_domain_name    = "origin.example.com"
  cognito_domain_prefix = "example-app-login"
}
`

test('deploy/terraform/aws-edge is terraform fmt clean', {
  skip: TERRAFORM === undefined ? 'terraform is not installed' : false,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-tf-fmt-'))
  try {
    const r = await terraform(['fmt', '-check', '-recursive', '-no-color', MODULE], dir, isolatedEnv(dir))
    assert.equal(r.code, 0, `not formatted: ${r.stdout}${r.stderr}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  for (const file of ['main.tf', 'variables.tf', 'outputs.tf', 'versions.tf', 'README.md']) {
    assert.ok(existsSync(MODULE + file), file)
  }
})

test('deploy/terraform/aws-edge passes terraform validate (offline, from the plugin mirror)', {
  skip: validateSkip(),
  timeout: 3 * COMMAND_TIMEOUT_MS,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-tf-validate-'))
  try {
    cpSync(MODULE, join(dir, 'aws-edge'), {
      recursive: true,
      // A developer's own init leftovers must not leak in.
      filter: (src) => !['.terraform', '.terraform.lock.hcl', 'terraform.tfstate'].includes(basename(src)),
    })
    writeFileSync(join(dir, 'main.tf'), ROOT_MODULE)
    const env = isolatedEnv(dir)

    const init = await terraform(
      ['init', '-backend=false', '-input=false', '-no-color', `-plugin-dir=${PLUGIN_DIR}`],
      dir,
      env,
    )
    assert.equal(init.code, 0, `terraform init failed:\n${init.stdout}${init.stderr}`)

    const validate = await terraform(['validate', '-no-color'], dir, env)
    assert.equal(validate.code, 0, `terraform validate failed:\n${validate.stdout}${validate.stderr}`)
    assert.match(validate.stdout, /Success! The configuration is valid\./)
    assert.doesNotMatch(validate.stdout + validate.stderr, /Warning:/, 'no warnings either')
    t.diagnostic(validate.stdout.trim().split('\n')[0] ?? '')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
