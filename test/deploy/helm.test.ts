/**
 * The Helm chart in deploy/helm/gatehouse, rendered by the real `helm` (v4, from the npm registry: see
 * .ci/run) for the default values and for several instances with every optional template on. Every
 * rendered object is validated against the Kubernetes API schemas (kubernetes-models, the OpenAPI
 * schemas compiled to validators; prometheus-operator's for the ServiceMonitor), the config the chart
 * writes is validated by Gatehouse's own config schema, and several instances without PostgreSQL fail
 * the render.
 */
import assert from 'node:assert/strict'
import { accessSync, constants, mkdtempSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { describe, test } from 'node:test'
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
import { Deployment } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { ConfigMap, PersistentVolumeClaim, Service } from 'kubernetes-models/v1'
import { parseAllDocuments } from 'yaml'
import { validateConfig } from '../../src/config/validate.ts'
import { REPO_ROOT, run, shown } from '../helpers/pack.ts'

const CHART = join(REPO_ROOT, 'deploy/helm/gatehouse')
const MULTI = join(CHART, 'ci/multi-instance-values.yaml')

/** `helm` on PATH, or where .ci/run puts it. */
function findHelm(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), join(homedir(), '.cache/gatehouse-helm/helm')]
  for (const dir of dirs) {
    try {
      accessSync(join(dir, 'helm'), constants.X_OK)
      return join(dir, 'helm')
    } catch {}
  }
  return undefined
}
const helm = findHelm()
const skip =
  helm === undefined && process.env.CI !== 'true'
    ? 'helm is not installed (.ci/run installs it from the npm registry)'
    : false

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are checked field by field below
type Manifest = Record<string, any>

// Each model's constructor takes its own typed shape; a rendered manifest is checked by validate() instead.
type ModelClass = new (data: never) => { validate(): void }
const MODELS: Record<string, ModelClass> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'networking.k8s.io/v1/Ingress': Ingress,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
}

async function template(
  ...args: string[]
): Promise<{ status: number | null; objects: Manifest[]; stderr: string }> {
  assert.ok(helm, 'helm is required under CI=true (.ci/run installs it)')
  const r = await run(helm, ['template', 'gh', CHART, '--namespace', 'auth', ...args], { timeoutMs: 60_000 })
  if (r.status !== 0) return { status: r.status, objects: [], stderr: r.stderr }
  const objects = parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Manifest | null)
    .filter((o): o is Manifest => o !== null)
  return { status: 0, objects, stderr: r.stderr }
}

/** Validates every object against its Kubernetes schema; the Traefik CRD, which has no published model, by shape. */
function validateAll(objects: Manifest[]): void {
  for (const o of objects) {
    const id = `${o.apiVersion}/${o.kind}`
    if (id === 'traefik.io/v1alpha1/Middleware') {
      assert.equal(typeof o.spec.forwardAuth.address, 'string')
      continue
    }
    const Model = MODELS[id]
    assert.ok(Model, `no schema for ${id}`)
    assert.doesNotThrow(() => new Model(o as never).validate(), `${id} ${o.metadata?.name}`)
  }
}

const byKind = (objects: Manifest[], kind: string) => objects.filter((o) => o.kind === kind)
const one = (objects: Manifest[], kind: string) => {
  const found = byKind(objects, kind)
  assert.equal(found.length, 1, kind)
  return found[0]!
}
const configOf = (objects: Manifest[]) =>
  validateConfig(
    parseAllDocuments(
      one(
        objects.filter((o) => o.data?.['gatehouse.yaml']),
        'ConfigMap',
      ).data['gatehouse.yaml'],
    )[0]!.toJS(),
  )

describe('Helm chart', { skip }, () => {
  test('helm lint --strict passes for the default and the multi-instance values', async () => {
    for (const values of [[], ['-f', MULTI]]) {
      const r = await run(helm!, ['lint', '--strict', CHART, ...values], { timeoutMs: 60_000 })
      assert.equal(r.status, 0, shown(r))
    }
  })

  test('default values: one pod, probes on the admin port bound to the pod, read-only and non-root', async () => {
    const { status, objects, stderr } = await template()
    assert.equal(status, 0, stderr)
    validateAll(objects)
    assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Service'])

    const config = configOf(objects)
    assert.equal(config.data_dir, '/data')
    assert.deepEqual([config.listen.host, config.listen.port], ['0.0.0.0', 8080])
    // The kubelet probes the pod's address: the admin listener cannot stay on loopback.
    assert.deepEqual([config.admin.host, config.admin.port], ['0.0.0.0', 9090])
    // ingress-nginx's auth-url and Traefik's ForwardAuth call the Service by name: the data port answers it.
    assert.deepEqual(config.server.allowed_hosts, [
      'gh-gatehouse',
      'gh-gatehouse.auth',
      'gh-gatehouse.auth.svc',
      'gh-gatehouse.auth.svc.cluster.local',
    ])

    const deployment = one(objects, 'Deployment')
    assert.equal(deployment.spec.replicas, 1)
    const pod = deployment.spec.template.spec
    const [c] = pod.containers
    assert.deepEqual(c.args, ['start', '--config', '/etc/gatehouse/gatehouse.yaml'])
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'admin' })
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'admin' })
    assert.ok(c.ports.some((p: Manifest) => p.name === 'admin' && p.containerPort === 9090))
    assert.equal(pod.securityContext.runAsNonRoot, true)
    assert.equal(c.securityContext.readOnlyRootFilesystem, true)
    assert.equal(c.securityContext.allowPrivilegeEscalation, false)
    assert.deepEqual(
      c.volumeMounts.map((m: Manifest) => [m.mountPath, m.readOnly ?? false]),
      [
        ['/etc/gatehouse', true],
        ['/data', false],
        ['/tmp', false],
      ],
    )
    assert.deepEqual(pod.volumes.find((v: Manifest) => v.name === 'data').emptyDir, {})
    // Secrets only by reference.
    const secretEnv = c.env.filter((e: Manifest) => e.valueFrom)
    assert.deepEqual(
      secretEnv.map((e: Manifest) => [e.name, e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key]),
      [
        ['GATEHOUSE_CLIENT_SECRET', 'gatehouse', 'client-secret'],
        ['GATEHOUSE_SESSION_SECRET', 'gatehouse', 'session-secret'],
      ],
    )
    assert.ok(c.env.every((e: Manifest) => e.valueFrom || !/SECRET|PASSWORD|TOKEN/.test(e.name)))
  })

  test('several instances sharing PostgreSQL: PDB, HPA, ServiceMonitor, Ingress and forward-auth objects', async () => {
    const { status, objects, stderr } = await template('-f', MULTI)
    assert.equal(status, 0, stderr)
    validateAll(objects)
    assert.deepEqual(objects.map((o) => o.kind).sort(), [
      'ConfigMap',
      'ConfigMap',
      'Deployment',
      'HorizontalPodAutoscaler',
      'Ingress',
      'Middleware',
      'PodDisruptionBudget',
      'Service',
      'ServiceMonitor',
    ])
    const config = configOf(objects)
    assert.deepEqual(config.store.postgres, { env: 'GATEHOUSE_POSTGRES_URL' })
    // `provider: null` takes the default values' provider out: a providers list alone.
    assert.deepEqual(
      config.providers?.map((p) => p.name),
      ['corp', 'partners'],
    )
    // The HPA owns the replica count.
    assert.equal(one(objects, 'Deployment').spec.replicas, undefined)
    assert.deepEqual(one(objects, 'HorizontalPodAutoscaler').spec.scaleTargetRef, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: 'gh-gatehouse',
    })
    assert.equal(one(objects, 'PodDisruptionBudget').spec.minAvailable, 1)
    assert.deepEqual(one(objects, 'ServiceMonitor').spec.endpoints, [
      { port: 'admin', path: '/metrics', interval: '30s' },
    ])
    const ingress = one(objects, 'Ingress')
    assert.deepEqual(ingress.spec.rules[0].http.paths[0], {
      path: '/oauth2',
      pathType: 'Prefix',
      backend: { service: { name: 'gh-gatehouse', port: { name: 'http' } } },
    })
    const headers = byKind(objects, 'ConfigMap').find((o) => o.metadata.name === 'gh-gatehouse-auth-headers')!
    assert.deepEqual(headers.data, {
      'X-Forwarded-Uri': '$request_uri',
      'X-Forwarded-Method': '$request_method',
    })
    assert.equal(
      one(objects, 'Middleware').spec.forwardAuth.address,
      'http://gh-gatehouse.auth.svc.cluster.local:8080/oauth2/auth?redirect=1',
    )
  })

  test('apps pass through into the config (upstream: null drops the default single upstream)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-helm-apps-'))
    const values = join(dir, 'apps.yaml')
    writeFileSync(
      values,
      [
        'config:',
        '  upstream: null',
        '  apps:',
        '    - { name: grafana, host: grafana.example.com, upstream: "http://grafana:3000", routes: [{ path: "/*", allow: { groups: [ops] } }] }',
        '    - { name: wiki, host: tools.example.com, path_prefix: /wiki, upstream: "http://wiki:80" }',
        '',
      ].join('\n'),
    )
    const { status, objects, stderr } = await template('-f', values)
    assert.equal(status, 0, stderr)
    const config = configOf(objects)
    assert.equal(config.upstream, undefined)
    assert.deepEqual(
      config.apps?.map((a) => [a.name, a.host, a.path_prefix]),
      [
        ['grafana', 'grafana.example.com', '/'],
        ['wiki', 'tools.example.com', '/wiki'],
      ],
    )
  })

  test("the user's own server settings and allowed hosts are kept beside the Service's names", async () => {
    const { status, objects, stderr } = await template(
      '--set',
      'config.server.allowed_hosts={app.internal.example}',
      '--set',
      'config.server.upstream_host=upstream',
      '--set',
      'clusterDomain=k8s.example',
    )
    assert.equal(status, 0, stderr)
    const { server } = configOf(objects)
    assert.equal(server.upstream_host, 'upstream')
    assert.deepEqual(server.allowed_hosts, [
      'gh-gatehouse',
      'gh-gatehouse.auth',
      'gh-gatehouse.auth.svc',
      'gh-gatehouse.auth.svc.k8s.example',
      'app.internal.example',
    ])
  })

  test('more than one replica, or autoscaling, without store.postgres fails the render', async () => {
    for (const set of ['replicaCount=2', 'autoscaling.enabled=true']) {
      const r = await template('--set', set)
      assert.notEqual(r.status, 0, set)
      assert.match(r.stderr, /needs config\.store\.postgres/, set)
    }
  })

  test('admin.listenOnPodIP=false keeps the admin port on loopback and probes from inside the container', async () => {
    const { status, objects, stderr } = await template('--set', 'admin.listenOnPodIP=false')
    assert.equal(status, 0, stderr)
    validateAll(objects)
    const { admin } = configOf(objects)
    assert.deepEqual([admin.host, admin.port], ['127.0.0.1', 9090])
    const [c] = one(objects, 'Deployment').spec.template.spec.containers
    assert.equal(c.readinessProbe.httpGet, undefined)
    assert.match(c.readinessProbe.exec.command.at(-1), /fetch\('http:\/\/127\.0\.0\.1:9090\/readyz'\)/)
    assert.deepEqual(
      one(objects, 'Service').spec.ports.map((p: Manifest) => p.name),
      ['http'],
    )
    const monitor = await template(
      '--set',
      'admin.listenOnPodIP=false',
      '--set',
      'serviceMonitor.enabled=true',
    )
    assert.notEqual(monitor.status, 0)
    assert.match(monitor.stderr, /serviceMonitor\.enabled needs admin\.listenOnPodIP/)
  })

  test('persistence: a claim of its own, or an existing one', async () => {
    const own = await template('--set', 'persistence.enabled=true')
    assert.equal(own.status, 0, own.stderr)
    validateAll(own.objects)
    assert.equal(one(own.objects, 'PersistentVolumeClaim').spec.resources.requests.storage, '1Gi')
    const data = (o: Manifest[]) =>
      one(o, 'Deployment').spec.template.spec.volumes.find((v: Manifest) => v.name === 'data')
    assert.deepEqual(data(own.objects).persistentVolumeClaim, { claimName: 'gh-gatehouse' })
    const existing = await template(
      '--set',
      'persistence.enabled=true',
      '--set',
      'persistence.existingClaim=mine',
    )
    assert.equal(existing.status, 0, existing.stderr)
    assert.equal(byKind(existing.objects, 'PersistentVolumeClaim').length, 0)
    assert.deepEqual(data(existing.objects).persistentVolumeClaim, { claimName: 'mine' })
  })

  test('configChange: restart rolls the pods on a new config (checksum), reload leaves that to the pods', async () => {
    const annotations = (o: Manifest[]) => one(o, 'Deployment').spec.template.metadata.annotations
    const restart = await template()
    assert.match(annotations(restart.objects)['checksum/config'], /^[0-9a-f]{64}$/)
    const reload = await template('--set', 'configChange=reload')
    assert.equal(reload.status, 0, reload.stderr)
    validateAll(reload.objects)
    assert.equal(annotations(reload.objects)['checksum/config'], undefined)
    // The config is mounted as a directory (no subPath), so kubelet's updates reach the pod.
    const mount = one(reload.objects, 'Deployment').spec.template.spec.containers[0].volumeMounts.find(
      (m: Manifest) => m.name === 'config',
    )
    assert.deepEqual([mount.mountPath, mount.subPath], ['/etc/gatehouse', undefined])
    const wrong = await template('--set', 'configChange=sometimes')
    assert.notEqual(wrong.status, 0)
    assert.match(wrong.stderr, /configChange must be restart or reload/)
  })
})
