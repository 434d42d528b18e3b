#!/usr/bin/env node
// What a V8 heap snapshot holds, by kind (the constructor of an object, or
// code, strings, closures...): self size and retained size, from the
// dominator tree (weak edges ignored), largest first.
//   node scripts/heap-summary.mjs FILE.heapsnapshot [TOP]
// The agent's snapshot: ACCEL_SCALE_HEAPSNAPSHOT=DIR bash scripts/agent-scale.sh.
import fs from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node scripts/heap-summary.mjs FILE.heapsnapshot [TOP]');
  process.exit(2);
}
const top = Number(topArg ?? 30);
const snap = JSON.parse(fs.readFileSync(file, 'utf8'));
const { meta } = snap.snapshot;
const { nodes, edges, strings } = snap;
const nf = meta.node_fields.length;
const ef = meta.edge_fields.length;
const [nodeTypes] = meta.node_types;
const [edgeTypes] = meta.edge_types;
const iType = meta.node_fields.indexOf('type');
const iName = meta.node_fields.indexOf('name');
const iSize = meta.node_fields.indexOf('self_size');
const iEdges = meta.node_fields.indexOf('edge_count');
const eType = meta.edge_fields.indexOf('type');
const eTo = meta.edge_fields.indexOf('to_node');
const weak = edgeTypes.indexOf('weak');
const n = nodes.length / nf;

const firstEdge = new Uint32Array(n + 1);
for (let i = 0, e = 0; i < n; i++) {
  firstEdge[i] = e;
  e += nodes[i * nf + iEdges] * ef;
  firstEdge[i + 1] = e;
}
const targets = (i, f) => {
  for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += ef) if (edges[e + eType] !== weak) f(edges[e + eTo] / nf);
};

// Post-order numbers by an iterative depth-first walk from the root (node 0).
const order = new Int32Array(n).fill(-1);
const post = [];
{
  const stack = [0];
  const next = [firstEdge[0]];
  order[0] = -2;
  while (stack.length) {
    const v = stack[stack.length - 1];
    let e = next[next.length - 1];
    let descended = false;
    while (e < firstEdge[v + 1]) {
      const w = edges[e + eTo] / nf;
      const t = edges[e + eType];
      e += ef;
      if (t === weak || order[w] !== -1) continue;
      order[w] = -2;
      next[next.length - 1] = e;
      stack.push(w);
      next.push(firstEdge[w]);
      descended = true;
      break;
    }
    if (!descended) {
      stack.pop();
      next.pop();
      order[v] = post.length;
      post.push(v);
    }
  }
}
const reachable = post.length;

// Predecessors, then immediate dominators (Cooper, Harvey and Kennedy).
const predStart = new Uint32Array(n + 1);
for (let i = 0; i < n; i++) if (order[i] >= 0) targets(i, (w) => order[w] >= 0 && predStart[w + 1]++);
for (let i = 0; i < n; i++) predStart[i + 1] += predStart[i];
const preds = new Uint32Array(predStart[n]);
const fill = predStart.slice(0, n);
for (let i = 0; i < n; i++) if (order[i] >= 0) targets(i, (w) => order[w] >= 0 && (preds[fill[w]++] = i));
const idom = new Int32Array(reachable).fill(-1);
const rootPo = order[0];
idom[rootPo] = rootPo;
for (let changed = true; changed;) {
  changed = false;
  for (let po = reachable - 2; po >= 0; po--) {
    const v = post[po];
    let d = -1;
    for (let k = predStart[v]; k < predStart[v + 1]; k++) {
      let p = order[preds[k]];
      if (idom[p] === -1) continue;
      if (d === -1) d = p;
      else {
        let q = d;
        while (p !== q) {
          while (p < q) p = idom[p];
          while (q < p) q = idom[q];
        }
        d = p;
      }
    }
    if (d !== -1 && idom[po] !== d) {
      idom[po] = d;
      changed = true;
    }
  }
}
const retained = new Float64Array(reachable);
for (let po = 0; po < reachable; po++) retained[po] += nodes[post[po] * nf + iSize];
for (let po = 0; po < reachable - 1; po++) if (idom[po] >= 0 && idom[po] !== po) retained[idom[po]] += retained[po];

const kind = (i) => {
  const type = nodeTypes[nodes[i * nf + iType]];
  if (type === 'object' || type === 'native') return `${type}: ${strings[nodes[i * nf + iName]]}`;
  return type;
};
const self = new Map();
const kept = new Map();
const count = new Map();
let total = 0;
for (let po = 0; po < reachable; po++) {
  const i = post[po];
  const k = kind(i);
  const s = nodes[i * nf + iSize];
  total += s;
  self.set(k, (self.get(k) ?? 0) + s);
  count.set(k, (count.get(k) ?? 0) + 1);
  // Retained by a kind: only where the dominator is of another kind (not twice).
  const d = idom[po];
  if (d === po || kind(post[d]) !== k) kept.set(k, (kept.get(k) ?? 0) + retained[po]);
}
const mb = (x) => (x / 1048576).toFixed(2).padStart(8);
const show = (title, m) => {
  console.log(`\n${title} (MB, objects, kind)`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${mb(v)} ${String(count.get(k)).padStart(8)}  ${k}`);
};
console.log(`${n} nodes, ${reachable} reachable, ${mb(total).trim()} MB`);
show('self size', self);
show('retained size', kept);
