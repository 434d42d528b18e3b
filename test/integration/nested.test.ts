// Nested attachments: the root and a child, a child and a grandchild,
// attached and detached in every order, with traffic flowing through each
// attach and detach. The innermost attached cgroup of a socket owns it
// (bpf/include/accel_owners.h): a connection goes on the fast path of its
// ends' owner when both ends have the same one, and stays on TCP when they
// have different ones; no socket is ever tried in two maps
// (socket_insert_failed stays 0). At the root of a cgroup namespace of the
// test's own (test/helpers/cgroupns.ts), never the host's root. At the end
// every map is empty and every pin gone.
//
// Cgroups: R (the namespace's root), C = R/c, G = R/c/g, S = R/s. Echo
// servers in G, S and C. After each step three transfers, one at a time,
// each between two reads of every attachment's counters (so that they tell
// which attachment carried which): "inner" (both ends in I's subtree),
// "outer" (both in O's, outside I's) and "split" (one end in each).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kernelLacks } from '../helpers/features.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { namespaceRoot, part, runAtNamespaceRoot } from '../helpers/cgroupns.js';

const R = '/sys/fs/cgroup';
const C = `${R}/c`;
const G = `${R}/c/g`;
const S = `${R}/s`;
const PORT = { [G]: 7481, [S]: 7482, [C]: 7483 } as Record<string, number>;
const MB = 1 << 20;

interface Pair {
  outer: string;
  inner: string;
  /** client cgroup, server cgroup, and the size in MB */
  transfers: { name: string; client: string; server: string; units: number }[];
}

/** Each attachment's fast-path bytes (redirected or held), by cgroup id,
 * as the script's `counters` prints them. */
type Snapshot = Record<string, string>;

const PAIRS: Pair[] = [
  {
    outer: R,
    inner: C,
    transfers: [
      { name: 'inner', client: G, server: G, units: 1 },
      { name: 'outer', client: S, server: S, units: 4 },
      { name: 'split', client: S, server: G, units: 16 },
    ],
  },
  {
    outer: C,
    inner: G,
    transfers: [
      { name: 'inner', client: G, server: G, units: 1 },
      { name: 'outer', client: C, server: C, units: 4 },
      { name: 'split', client: C, server: G, units: 16 },
    ],
  },
];

type Step = { op: 'attach' | 'detach'; which: 'outer' | 'inner' };
const ORDERS: Step[][] = [
  [
    { op: 'attach', which: 'outer' },
    { op: 'attach', which: 'inner' },
    { op: 'detach', which: 'inner' },
    { op: 'detach', which: 'outer' },
  ],
  [
    { op: 'attach', which: 'inner' },
    { op: 'attach', which: 'outer' },
    { op: 'detach', which: 'outer' },
    { op: 'detach', which: 'inner' },
  ],
  [
    { op: 'attach', which: 'outer' },
    { op: 'attach', which: 'inner' },
    { op: 'detach', which: 'outer' },
    { op: 'detach', which: 'inner' },
  ],
  [
    { op: 'attach', which: 'inner' },
    { op: 'attach', which: 'outer' },
    { op: 'detach', which: 'inner' },
    { op: 'detach', which: 'outer' },
  ],
];

/** The innermost attached cgroup at or above `cg`. */
function owner(cg: string, attached: Set<string>): string | null {
  for (let c = cg; c.startsWith(R); c = c.slice(0, c.lastIndexOf('/'))) if (attached.has(c)) return c;
  return null;
}

interface Attachment {
  cgroupId: string;
  cgroupPath: string;
  socketsInMap: number;
  counters: Record<string, string> | null;
}
type Status = { attachments: Attachment[] };

describe('nested attachments', { skip: kernelLacks('fastpath') }, () => {
  it('root + child and child + grandchild, attach and detach in every order with traffic flowing: the innermost owns each socket, a split pair stays on TCP, nothing is tried in two maps, nothing left', async (t) => {
    const ns = namespaceRoot(t, 'accel-nested');
    const { accel, tmp } = ns;
    const cmd = (step: Step, cg: string) =>
      step.op === 'attach'
        ? `${accel} attach --cgroup ${cg} --skip-selftest${cg === R ? ' --accept-unsafe-readers-host-wide' : ''} > /dev/null`
        : `${accel} detach --cgroup ${cg} --drain-ms 0 > /dev/null`;
    let script = `
mkdir -p $R/c/g $R/s
echo_server ${G} ${tmp}/g.log ${PORT[G]}; echo_server ${S} ${tmp}/s.log ${PORT[S]}; echo_server ${C} ${tmp}/c.log ${PORT[C]}
waitfor ${tmp}/g.log 1; waitfor ${tmp}/s.log 1; waitfor ${tmp}/c.log 1
# Traffic while a step runs: every transfer of the pair, again and again.
bg_start() { ( while [ ! -f ${tmp}/stop ]; do for x in "$@"; do set -- $x; client $1 $2 262144 || true; done; done >> ${tmp}/bg.log 2>&1 ) & bg=$!; sleep 0.2; }
bg_stop() { touch ${tmp}/stop; wait $bg; rm -f ${tmp}/stop; }
# Every attachment's fast-path bytes: {"<cgroup id>": "<bytes>", ...}
counters() { ${ns.node} -e "import('${PACKAGE_ROOT}/dist/src/fastpath/pins.js').then((p) => console.log(JSON.stringify(Object.fromEntries(process.argv.slice(1).map((d) => [d.slice(d.lastIndexOf('-') + 1), String(p.withMaps(d, (m) => { const c = m.counters(); return c.bytes_redirected + c.bytes_held; }))])))))" $(ls -d /sys/fs/bpf/accel/cgroup-* 2>/dev/null); }
`;
    const plan: { pair: Pair; step: Step; attached: Set<string>; tag: string }[] = [];
    for (const [p, pair] of PAIRS.entries()) {
      const bg = pair.transfers.map((x) => `"${x.client} ${PORT[x.server]}"`).join(' ');
      const transfers = pair.transfers.map((x, j) => `r${j}=$(client ${x.client} ${PORT[x.server]} ${x.units * MB} || true); k${j + 1}=$(counters)`).join('; ');
      for (const [o, order] of ORDERS.entries()) {
        const attached = new Set<string>();
        for (const [s, step] of order.entries()) {
          const cg = step.which === 'outer' ? pair.outer : pair.inner;
          if (step.op === 'attach') attached.add(cg);
          else attached.delete(cg);
          const tag = `P${p}O${o}S${s}`;
          plan.push({ pair, step, attached: new Set(attached), tag });
          script += `
bg_start ${bg}
${cmd(step, cg)}
bg_stop
echo "${tag}B $(status)"
k0=$(counters); ${transfers}
echo "${tag}T [$r0,$r1,$r2]"
echo "${tag}K [$k0,$k1,$k2,$k3]"
echo "${tag}A $(status)"`;
        }
      }
    }
    script += `
echo "BG {\\"transfers\\": $(grep -c '"ok"' ${tmp}/bg.log), \\"failed\\": $(grep -c '"ok":false' ${tmp}/bg.log || true)}"
echo "LEFT {\\"pins\\": \\"$(pins)\\", \\"hooks\\": $(hooks $R $R/c $R/c/g)}"
`;
    const out = await runAtNamespaceRoot(ns, script, 240_000);

    let raceCount = 0;
    for (const { pair, step, attached, tag } of plan) {
      const where = `${tag} (${step.op} ${step.which}, attached: ${[...attached].join(' ') || 'none'})`;
      const results = part<{ ok: boolean }[]>(out, `${tag}T`);
      assert.deepEqual(
        results.map((r) => r.ok),
        [true, true, true],
        `${where}: every transfer byte-exact`,
      );
      const snaps = part<Snapshot[]>(out, `${tag}K`);
      const before = part<Status>(out, `${tag}B`).attachments;
      const after = part<Status>(out, `${tag}A`).attachments;
      assert.deepEqual(after.map((a) => a.cgroupPath).sort(), [...attached].sort(), `${where}: the attachments`);
      for (const cg of attached) {
        const b = before.find((a) => a.cgroupPath === cg);
        const a = after.find((x) => x.cgroupPath === cg);
        const mine = pair.transfers.filter((x) => owner(x.client, attached) === cg && owner(x.server, attached) === cg);
        // What this attachment carried of each transfer, which moves
        // 2 x its size. Not exactly that: a held send that TCP takes only
        // in part leaves the verdict at PASS for the next sends, which the
        // program does not see (tcp_bpf_send_verdict), so up to a few % of
        // a held transfer goes uncounted (seen 1.3 of 32 MB). Carried is
        // at least one direction's worth; not carried is nothing.
        const id = a?.cgroupId ?? '';
        const fast = pair.transfers.map((_, j) => BigInt(snaps[j + 1]?.[id] ?? 0) - BigInt(snaps[j]?.[id] ?? 0));
        const carried = pair.transfers.filter((_, j) => fast[j]! > 0n);
        assert.ok(
          carried.every((x) => mine.includes(x) && fast[pair.transfers.indexOf(x)]! >= BigInt(x.units * MB)),
          `${where}: ${cg} carried ${fast.join(', ')} bytes of the ${pair.transfers.map((x) => x.name).join(', ')} transfers; only its own, each whole, may be among them (${mine.map((x) => x.name).join(', ') || 'none'})`,
        );
        // One of its own that it did not carry: a client whose first write
        // left before its peer joined (a race every attachment has: the
        // connection stays on TCP whole, counted in connections_tcp_only),
        // never for another reason.
        const missed = mine.filter((x) => !carried.includes(x)).length;
        const raced = BigInt(a?.counters?.connections_tcp_only ?? 0) - BigInt(b?.counters?.connections_tcp_only ?? 0);
        assert.ok(BigInt(missed) <= raced, `${where}: ${cg} did not carry ${missed} of its own transfers, and ${raced} raced`);
        raceCount += missed;
        // Both ends of its own connections. A split pair's client may go in
        // for the instant until its peer, a deeper attachment's, is
        // established (the outer one recorded that listener before the
        // inner one was made); it is then taken out, never redirected.
        const inserted = BigInt(a?.counters?.sockets_inserted ?? 0) - BigInt(b?.counters?.sockets_inserted ?? 0);
        const splitClients = pair.transfers.filter((x) => owner(x.client, attached) === cg && owner(x.server, attached) !== cg).length;
        assert.ok(inserted >= BigInt(2 * (mine.length - missed)) && inserted <= BigInt(2 * mine.length + splitClients), `${where}: ${cg} inserted ${inserted} sockets`);
        assert.equal(a?.counters?.socket_insert_failed, '0', `${where}: ${cg} never tried a socket that is in another map`);
        assert.equal(a?.socketsInMap, 0, `${where}: ${cg}'s map is empty once the connections closed`);
      }
    }
    // The race is rare: nearly every transfer took its owner's fast path.
    assert.ok(raceCount <= 3, `${raceCount} transfers raced onto TCP`);
    const bg = part<{ transfers: number; failed: number }>(out, 'BG');
    assert.ok(bg.transfers >= plan.length * 3, JSON.stringify(bg));
    assert.equal(bg.failed, 0, 'every transfer running through an attach or detach was byte-exact');
    assert.deepEqual(part(out, 'LEFT'), { pins: '', hooks: [0, 0, 0] });
  });
});
