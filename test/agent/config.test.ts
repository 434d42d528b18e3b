// The agent's configuration: globs, errors that name the field and line,
// and the JSON Schema published in deploy/ made from the same zod schema.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { configJsonSchema, parseAgentConfig } from '../../src/agent/config.js';
import { compileGlob, mayLeadTo } from '../../src/agent/glob.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

describe('agent cgroup globs', () => {
  const cases: [string, string, boolean][] = [
    ['system.slice/web.service', 'system.slice/web.service', true],
    ['system.slice/web.service', 'system.slice/web.service/x', false],
    ['system.slice/*.service', 'system.slice/web.service', true],
    ['system.slice/*.service', 'system.slice/a/web.service', false],
    ['kubepods.slice/**/kubepods-*pod*.slice', 'kubepods.slice/kubepods-pod12_ab.slice', true],
    ['kubepods.slice/**/kubepods-*pod*.slice', 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_ab.slice', true],
    ['kubepods.slice/**/kubepods-*pod*.slice', 'kubepods.slice/kubepods-burstable.slice', false],
    ['kubepods/*/pod*', 'kubepods/besteffort/pod1-2', true],
    ['kubepods/*/pod*', 'kubepods/pod1-2', false],
    ['kubepods/{burstable,besteffort}/pod?', 'kubepods/burstable/pod1', true],
    ['kubepods/{burstable,besteffort}/pod?', 'kubepods/guaranteed/pod1', false],
    ['**/web.service', 'a/b/web.service', true],
    ['**/web.service', 'web.service', true],
    ['a.b/c', 'aXb/c', false],
  ];
  for (const [glob, p, want] of cases) it(`${glob} ${want ? 'matches' : 'does not match'} ${p}`, () => assert.equal(compileGlob(glob).regex.test(p), want));

  it('descends only where a match can be', () => {
    const g = compileGlob('kubepods/*/pod*');
    assert.equal(mayLeadTo(g, ['kubepods']), true);
    assert.equal(mayLeadTo(g, ['system.slice']), false);
    assert.equal(mayLeadTo(g, ['kubepods', 'burstable', 'podx']), false, 'no deeper than the glob');
    assert.equal(mayLeadTo(compileGlob('kubepods.slice/**/x'), ['kubepods.slice', 'a', 'b', 'c']), true);
  });

  it('refuses . and .. and empty segments', () => {
    for (const bad of ['a/../b', './a', 'a//b']) assert.throws(() => compileGlob(bad), /not a relative cgroup path glob/);
  });
});

describe('agent configuration', () => {
  const ok = `
cgroupRoot: /sys/fs/cgroup
selections:
  - name: web
    cgroups: [system.slice/web.service]
    fastPath:
      bypassPorts: [8443]
`;

  it('reads YAML and JSON with the defaults filled in', () => {
    const y = parseAgentConfig(ok, 'a.yaml');
    assert.equal(y.pollIntervalMs, 500);
    assert.deepEqual(y.selections[0]?.fastPath.bypassPorts, [8443]);
    assert.equal(y.selections[0]?.intercept, null);
    const j = parseAgentConfig(JSON.stringify({ selections: [{ name: 'web', cgroups: ['x'] }] }), 'a.json');
    assert.equal(j.selections[0]?.fastPath.selftest, true);
  });

  const bad: [string, string, RegExp][] = [
    ['a wrong type', ok.replace('[8443]', '[84430]'), /^c\.yaml:7: selections\.0\.fastPath\.bypassPorts\.0: /],
    ['an unknown field', ok.replace('    fastPath:', '    fastpath: {}\n    fastPath:'), /^c\.yaml:6: selections\.0: Unrecognized key\(s\) in object: 'fastpath'/],
    ['a bad glob', ok.replace('system.slice/web.service', 'a/../b'), /^c\.yaml:5: selections\.0\.cgroups\.0: "a\/\.\.\/b" is not a relative/],
    ['a syntax error', ok.replace('[8443]', '[8443'), /^c\.yaml:8: Flow sequence/],
    ['neither cgroups nor pods', ok.replace('    cgroups: [system.slice/web.service]\n', ''), /^c\.yaml:4: selections\.0: give either cgroups or pods/],
    [
      'pods without kubernetes',
      ok.replace('cgroups: [system.slice/web.service]', 'pods: { annotation: accel.dev/enabled }'),
      /^c\.yaml:5: selections\.0\.pods: pod selections need kubernetes\.enabled/,
    ],
    ['a name used twice', `${ok}  - name: web\n    cgroups: [x]\n`, /^c\.yaml:8: selections\.1\.name: selection name "web" is used twice/],
  ];
  for (const [what, text, re] of bad) {
    it(`names the field and line of ${what}`, () => {
      assert.throws(
        () => parseAgentConfig(text, 'c.yaml'),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'E_USAGE');
          assert.match(err.message, re);
          return true;
        },
      );
    });
  }

  it('publishes the JSON Schema of the zod schema in deploy/', () => {
    const published = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'deploy', 'agent-config.schema.json'), 'utf8')) as object;
    assert.deepEqual(published, configJsonSchema(), 'deploy/agent-config.schema.json is stale: node dist/src/cli/main.js agent --print-schema > deploy/agent-config.schema.json');
    // And the example configurations in deploy/ are valid.
    for (const f of ['deploy/systemd/agent.yaml']) parseAgentConfig(fs.readFileSync(path.join(PACKAGE_ROOT, f), 'utf8'), f);
  });
});
