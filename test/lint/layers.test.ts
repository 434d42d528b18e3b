// The import graph of src/ keeps the layering of the design (issue 14): an
// import points to the same or a lower layer, the components of layer 3
// never import one another, and nothing imports in a cycle. The graph is
// read with the TypeScript compiler's pre-processor (every import, export
// ... from and import(), type-only ones too: they are dependencies of the
// design even where the compiled code drops them).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';
import { PACKAGE_ROOT } from '../../src/paths.js';

/** Lowest first. A unit is a folder of src/ ('bpf/') or a file at its top ('errors.ts'). */
const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'failpoint.ts', 'log.ts', 'paths.ts', 'privileges.ts', 'seams.ts'],
  ['bpf/', 'sys/', 'cgroup/', 'net/', 'proc/', 'stream/', 'probe/', 'state/'],
  ['maps/'],
  ['fastpath/', 'intercept/', 'splice/', 'proxy/'],
  ['attachment/'],
  ['cli/', 'bench/', 'demo/', 'agent/'],
];
/** The components: each imports only lower layers and itself. */
const COMPONENTS = LAYERS[3] ?? [];
/** Pairs of modules that import neither way (beyond what the layers say). */
const APART: readonly [string, string][] = [['bench/chart.ts', 'bench/report.ts']];
/** The only module that imports koffi: the rest of src/ calls libbpf and libc through it. */
const KOFFI_IMPORTER = 'bpf/native.ts';

interface Graph {
  /** Module (path under src/, e.g. 'bpf/map.ts') -> the modules of src/ it imports. */
  edges: Map<string, string[]>;
  /** Module -> the packages it imports ('koffi', 'node:fs', ...). */
  packages: Map<string, string[]>;
}

function sourceFiles(dir: string, base = dir): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory() ? sourceFiles(path.join(dir, e.name), base) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path.relative(base, path.join(dir, e.name))] : [],
    )
    .sort();
}

/** The import graph of the .ts files under `srcDir`. A relative import that names no file of it fails. */
function readGraph(srcDir: string): Graph {
  const edges = new Map<string, string[]>();
  const packages = new Map<string, string[]>();
  for (const file of sourceFiles(srcDir)) {
    const imports = ts.preProcessFile(fs.readFileSync(path.join(srcDir, file), 'utf8'), true, true).importedFiles.map((f) => f.fileName);
    const local = imports.filter((s) => s.startsWith('.'));
    edges.set(
      file,
      [...new Set(local)].map((s) => {
        const target = path.normalize(path.join(path.dirname(file), s)).replace(/\.js$/, '.ts');
        assert.ok(fs.existsSync(path.join(srcDir, target)), `src/${file} imports ${s}, which is no module of src/`);
        return target;
      }),
    );
    packages.set(file, [...new Set(imports.filter((s) => !s.startsWith('.')))]);
  }
  return { edges, packages };
}

function unitOf(module: string): string {
  return module.includes('/') ? `${module.split('/')[0]}/` : module;
}

function layerOf(module: string): number | undefined {
  const i = LAYERS.findIndex((units) => units.includes(unitOf(module)));
  return i < 0 ? undefined : i;
}

const edge = (from: string, to: string) => `src/${from} -> src/${to}`;

/** Every rule broken, one line each, naming the edge. */
function violations(g: Graph): string[] {
  const out: string[] = [];
  for (const m of g.edges.keys()) if (layerOf(m) === undefined) out.push(`src/${m}: ${unitOf(m)} is in no layer of the design`);
  for (const [from, tos] of g.edges) {
    const lf = layerOf(from);
    for (const to of tos) {
      const lt = layerOf(to);
      if (lf === undefined || lt === undefined) continue;
      if (lt > lf) out.push(`${edge(from, to)}: layer ${lf} (${unitOf(from)}) imports layer ${lt} (${unitOf(to)})`);
      else if (lt === lf && COMPONENTS.includes(unitOf(from)) && unitOf(from) !== unitOf(to))
        out.push(`${edge(from, to)}: component ${unitOf(from)} imports component ${unitOf(to)}`);
      if (APART.some(([a, b]) => (from === a && to === b) || (from === b && to === a))) out.push(`${edge(from, to)}: these two never import each other`);
    }
  }
  for (const [m, pkgs] of g.packages) if (pkgs.includes('koffi') && m !== KOFFI_IMPORTER) out.push(`src/${m} -> koffi: only src/${KOFFI_IMPORTER} imports koffi`);
  for (const cycle of cycles(g.edges)) out.push(`cycle: ${cycle.map((m) => `src/${m}`).join(' -> ')}`);
  return out;
}

/** One cycle per strongly connected component that has one (Tarjan), as a path back to its start. */
function cycles(edges: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v) ?? 0);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) ?? 0, index.get(w) ?? 0));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop();
        if (w === undefined) break;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      components.push(c);
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) connect(v);
  return components
    .filter((c) => c.length > 1 || (edges.get(c[0] ?? '') ?? []).includes(c[0] ?? ''))
    .map((c) => {
      // A shortest way back to the component's first module, within it.
      const members = new Set(c);
      const start = [...c].sort()[0] ?? '';
      const from = new Map<string, string>();
      const queue = [start];
      while (queue.length) {
        const v = queue.shift() ?? '';
        for (const w of edges.get(v) ?? []) {
          if (w === start) {
            const way = [v];
            while (way[0] !== start) way.unshift(from.get(way[0] ?? '') ?? start);
            return [...way, start];
          }
          if (members.has(w) && !from.has(w)) {
            from.set(w, v);
            queue.push(w);
          }
        }
      }
      return [start, start];
    });
}

describe('the layering of src/', () => {
  const found = violations(readGraph(path.join(PACKAGE_ROOT, 'src')));

  it('every import points to the same or a lower layer, components stay apart, no cycle', () => {
    if (found.length) assert.fail(`rules of the design broken:\n${found.join('\n')}`);
  });
});

describe('the layering check itself', () => {
  const graph = (edges: Record<string, string[]>, packages: Record<string, string[]> = {}): Graph => ({
    edges: new Map(Object.entries(edges)),
    packages: new Map(Object.entries(packages)),
  });

  it('names an import into a higher layer, between components, of koffi, and a folder in no layer', () => {
    const g = graph(
      { 'bpf/map.ts': ['maps/layout.ts'], 'maps/layout.ts': [], 'fastpath/a.ts': ['intercept/b.ts'], 'intercept/b.ts': [], 'misc/x.ts': [] },
      { 'bpf/map.ts': ['koffi'], 'bpf/native.ts': ['koffi'] },
    );
    assert.deepEqual(violations(g), [
      'src/misc/x.ts: misc/ is in no layer of the design',
      'src/bpf/map.ts -> src/maps/layout.ts: layer 1 (bpf/) imports layer 2 (maps/)',
      'src/fastpath/a.ts -> src/intercept/b.ts: component fastpath/ imports component intercept/',
      'src/bpf/map.ts -> koffi: only src/bpf/native.ts imports koffi',
    ]);
  });

  it('names every cycle as a path, and the pair that stays apart', () => {
    const g = graph({ 'bench/chart.ts': ['bench/report.ts'], 'bench/report.ts': ['bench/chart.ts'], 'log.ts': ['errors.ts'], 'errors.ts': ['log.ts'], 'paths.ts': ['paths.ts'] });
    assert.deepEqual(violations(g).sort(), [
      'cycle: src/bench/chart.ts -> src/bench/report.ts -> src/bench/chart.ts',
      'cycle: src/errors.ts -> src/log.ts -> src/errors.ts',
      'cycle: src/paths.ts -> src/paths.ts',
      'src/bench/chart.ts -> src/bench/report.ts: these two never import each other',
      'src/bench/report.ts -> src/bench/chart.ts: these two never import each other',
    ]);
  });
});
