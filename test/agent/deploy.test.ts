// deploy/: the Kubernetes manifests validated offline against the API
// schemas (kubernetes-models), and checked against what the agent needs;
// the systemd units; the Grafana dashboard's queries against the metrics
// the agent exports.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import type { IContainer } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import type { Agent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import { ENDPOINT_PATHS, parseListenAddress } from '../../src/agent/http.js';
import { agentMetrics } from '../../src/agent/metrics.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { requirePrivileges } from '../../src/privileges.js';

const DEPLOY = path.join(PACKAGE_ROOT, 'deploy');
type Doc = { kind: string; apiVersion: string; metadata: { name: string; namespace?: string } } & Record<string, unknown>;

function docs(file: string): Doc[] {
  return parseAllDocuments(fs.readFileSync(path.join(DEPLOY, 'kubernetes', file), 'utf8')).map((d) => d.toJS() as Doc);
}

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  DaemonSet: DaemonSet as never,
  ConfigMap: ConfigMap as never,
  Namespace: Namespace as never,
  ServiceAccount: ServiceAccount as never,
  ClusterRole: ClusterRole as never,
  ClusterRoleBinding: ClusterRoleBinding as never,
};

describe('Kubernetes manifests', () => {
  const all = ['rbac.yaml', 'configmap.yaml', 'daemonset.yaml'].flatMap(docs);
  const find = <T>(kind: string) => all.find((d) => d.kind === kind) as unknown as T & Doc;

  it('are valid objects of the Kubernetes API', () => {
    for (const d of all) {
      const Model = MODELS[d.kind];
      assert.ok(Model, `no model for ${d.kind}`);
      assert.doesNotThrow(() => new Model(d as never).validate(), `${d.kind} ${d.metadata.name}`);
    }
    // The check can fail: a wrong type is refused.
    const ds = structuredClone(find<DaemonSet>('DaemonSet')) as unknown as { spec: { template: { spec: { containers: { ports: { containerPort: unknown }[] }[] } } } };
    (ds.spec.template.spec.containers[0] as { ports: { containerPort: unknown }[] }).ports[0] = { containerPort: 'metrics' };
    assert.throws(() => new DaemonSet(ds as never).validate(), /containerPort must be integer/);
  });

  it('give the agent what it needs: config, mounts, privileges, node name, probes, metrics port', () => {
    const ds = find<DaemonSet>('DaemonSet');
    const pod = ds.spec?.template.spec;
    assert.ok(pod);
    const c = pod.containers.find((x) => x.name === 'agent') as IContainer;
    const args = [...(c.command ?? []), ...(c.args ?? [])];
    assert.ok(args.includes('agent'));
    const opt = (name: string) => args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);

    // The configuration: the ConfigMap's file, mounted where --config points, valid.
    const configPath = opt('--config') as string;
    const mountOf = (p: string) =>
      (c.volumeMounts ?? []).filter((m) => p === m.mountPath || p.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    const cfgMount = mountOf(configPath);
    const cfgVolume = pod.volumes?.find((v) => v.name === cfgMount?.name);
    const cm = find<ConfigMap>('ConfigMap');
    assert.equal(cfgVolume?.configMap?.name, cm.metadata.name);
    const config = parseAgentConfig(cm.data?.[path.basename(configPath)] ?? '', 'configmap.yaml');
    assert.equal(config.kubernetes.enabled, true);

    // Host mounts: the node's bpffs (its pins outlive the pod), cgroup tree and records.
    const host = (mountPath: string) => {
      const m = (c.volumeMounts ?? []).find((x) => x.mountPath === mountPath);
      return { mount: m, path: pod.volumes?.find((v) => v.name === m?.name)?.hostPath?.path };
    };
    assert.equal(host('/sys/fs/bpf').path, '/sys/fs/bpf');
    assert.equal(host('/sys/fs/bpf').mount?.mountPropagation, 'Bidirectional');
    assert.equal(host('/sys/fs/cgroup').path, '/sys/fs/cgroup');
    assert.equal(host('/run/accel').path, '/run/accel', 'records on the node, for adoption after a restart');
    // The API server allows Bidirectional only in a privileged container.
    assert.equal(c.securityContext?.privileged, true);
    assert.equal(pod.hostNetwork, true, "interception hooks the node's interfaces");

    // NODE_NAME from the downward API, for the pod watch.
    assert.equal(c.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');

    // Probes and the metrics port are the agent's endpoints on its --metrics-addr.
    const addr = parseListenAddress((opt('--metrics-addr') as string).replace('$(HOST_IP)', '10.0.0.1'));
    const port = c.ports?.find((p) => p.name === 'metrics');
    assert.equal(port?.containerPort, addr.port);
    assert.deepEqual([c.livenessProbe?.httpGet?.path, c.readinessProbe?.httpGet?.path], [ENDPOINT_PATHS.health, ENDPOINT_PATHS.ready]);
    assert.equal(c.livenessProbe?.httpGet?.port, 'metrics');
    assert.ok(c.env?.some((e) => e.name === 'HOST_IP' && e.valueFrom?.fieldRef?.fieldPath === 'status.hostIP'));

    // Scheduling as node plumbing.
    assert.equal(pod.priorityClassName, 'system-node-critical');
    assert.ok(pod.tolerations?.some((t) => t.operator === 'Exists' && !t.key));
    assert.ok(c.resources?.requests?.memory && c.resources.limits?.memory);
  });

  it('let the agent watch the pods of its node and nothing more', () => {
    const ds = find<DaemonSet>('DaemonSet');
    const sa = find<ServiceAccount>('ServiceAccount');
    assert.equal(ds.spec?.template.spec?.serviceAccountName, sa.metadata.name);
    const role = find<ClusterRole>('ClusterRole');
    assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }]);
    const binding = find<ClusterRoleBinding>('ClusterRoleBinding');
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  });
});

describe('systemd units', () => {
  const unit = (name: string) => fs.readFileSync(path.join(DEPLOY, 'systemd', name), 'utf8');
  const values = (text: string, key: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${key}=`))
      .flatMap((l) => l.slice(key.length + 1).split(/\s+/));

  it('grant the agent the capabilities accel checks for, and write access where it writes', () => {
    const u = unit('accel-agent.service');
    const caps = values(u, 'AmbientCapabilities');
    assert.deepEqual(values(u, 'CapabilityBoundingSet'), caps);
    const bit: Record<string, bigint> = { CAP_NET_ADMIN: 12n, CAP_SYS_ADMIN: 21n, CAP_BPF: 39n, CAP_PERFMON: 38n, CAP_SYS_RESOURCE: 24n, CAP_DAC_OVERRIDE: 1n };
    const mask = caps.reduce((m, c) => m | (1n << (bit[c] ?? 63n)), 0n);
    assert.doesNotThrow(() => requirePrivileges(mask));
    assert.throws(() => requirePrivileges(mask & ~(1n << 12n)), /CAP_NET_ADMIN/);
    assert.deepEqual(values(u, 'ReadWritePaths').sort(), ['/run/accel', '/sys/fs/bpf', '/sys/fs/cgroup']);
    assert.match(u, /^ExecStart=.* agent --config \/etc\/accel\/agent\.yaml/m);
    assert.match(u, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.match(u, /^RuntimeDirectoryPreserve=yes$/m, 'records outlive a stop, for adoption');
    assert.match(unit('accel-proxy@.service'), /^ExecStart=.* proxy --port %i /m);
  });

  it('run node with the V8 limits of the DaemonSet, which the scale script measures', () => {
    const exec = /^ExecStart=(\S+) (.*?) ?\/opt\/accel\/dist\/src\/cli\/main\.js agent /m.exec(unit('accel-agent.service'));
    assert.equal(exec?.[1], '/usr/bin/node');
    const flags = (exec?.[2] ?? '').split(' ');
    assert.ok(flags.some((f) => /^--max-semi-space-size=\d+$/.test(f)) && flags.some((f) => /^--max-old-space-size=\d+$/.test(f)), exec?.[2]);
    const ds = docs('daemonset.yaml').find((d) => d.kind === 'DaemonSet') as unknown as DaemonSet;
    const command = ds.spec?.template.spec?.containers.find((c) => c.name === 'agent')?.command ?? [];
    assert.deepEqual(command, ['node', ...flags, '/opt/accel/dist/src/cli/main.js', 'agent']);
    assert.match(fs.readFileSync(path.join(PACKAGE_ROOT, 'scripts', 'agent-scale.sh'), 'utf8'), /deploy\/systemd\/accel-agent\.service/);
  });

  it('pass systemd-analyze verify', (t) => {
    const which = spawnSync('systemd-analyze', ['--version']);
    if (which.error) return t.skip('systemd-analyze is not installed');
    for (const name of ['accel-agent.service', 'accel-proxy@.service']) {
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(DEPLOY, 'systemd', name)], { encoding: 'utf8' });
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', name);
    }
  });
});

describe('Grafana dashboard', () => {
  it('queries only metrics the agent exports', () => {
    const fake = {
      tracked: new Map(),
      stats: { reconciles: {}, configReloads: { ok: 0, failed: 0 }, scans: 0, lastScanVisited: 0, lastProgressAt: 0 },
      ready: false,
    } as unknown as Agent;
    const names = new Set(
      agentMetrics(fake, '/nonexistent')
        .registry.getMetricsAsArray()
        .map((m) => m.name),
    );
    const d = JSON.parse(fs.readFileSync(path.join(DEPLOY, 'grafana', 'accel-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const used = d.panels.flatMap((p) => p.targets.flatMap((x) => x.expr.match(/\b(?:accel|process)_[a-z_]+\b/g) ?? []));
    assert.ok(used.length > 10);
    for (const m of used) assert.ok(names.has(m), `${m} is not a metric of the agent`);
  });
});
