#!/usr/bin/env bash
# The agent at the scale of one node, by hand (root; takes the test lock):
#   bash scripts/agent-scale.sh [N]
# N (default 1000) pod-like cgroups under a child cgroup of this script,
# all selected; in 10 of them, 100 open connections each (their sockets in
# the maps). Prints: the time to attach all N from start, the agent's
# resident memory (VmRSS, VmHWM) once they are attached and after a scrape
# of /metrics, the scrape's time, and how long each of 5 new cgroups took
# from mkdir to the agent's "attached" event. Then the agent stops with
# --detach-on-exit and everything the script made is removed.
#
# The agent runs with the V8 flags of deploy/systemd/accel-agent.service and
# the DaemonSet (ACCEL_AGENT_NODE_FLAGS overrides them; "" for Node's
# defaults). ACCEL_SCALE_HEAPSNAPSHOT=DIR also writes a heap snapshot of the
# agent there after the scrape (node --heapsnapshot-signal).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
if [ -z "${ACCEL_SCALE_LOCKED:-}" ]; then exec env ACCEL_SCALE_LOCKED=1 flock /run/lock/accel-tests.lock bash "$0" "$@"; fi
CG=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
ROOT="$CG/accel-agent-scale-$$"
TMP=$(mktemp -d)
AGENT=""
cleanup() {
  # Every process the script put in its cgroups (the probes and their pipes), by pid.
  if [ -d "$ROOT" ]; then for f in $(find "$ROOT" -name cgroup.procs); do for p in $(cat "$f"); do kill -9 "$p" 2>/dev/null || true; done; done; fi
  if [ -n "$AGENT" ] && kill -0 "$AGENT" 2>/dev/null; then kill -TERM "$AGENT"; wait "$AGENT" || true; fi
  sleep 0.5
  [ -d "$ROOT" ] && find "$ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ms() { date +%s%3N; }
mkdir -p "$ROOT/kubepods/burstable"
for i in $(seq 1 "$N"); do mkdir "$ROOT/kubepods/burstable/pod$i"; done
printf 'cgroupRoot: %s\nselections:\n  - name: pods\n    cgroups: ["kubepods/*/pod*"]\n    fastPath: { selftest: false }\n' "$ROOT" >"$TMP/agent.yaml"
t0=$(ms)
NODE_FLAGS=${ACCEL_AGENT_NODE_FLAGS-$(sed -n 's|^ExecStart=/usr/bin/node \(.*\) /opt/accel/dist/src/cli/main.js agent.*|\1|p' deploy/systemd/accel-agent.service)}
SNAPDIR=${ACCEL_SCALE_HEAPSNAPSHOT:-}
[ -n "$SNAPDIR" ] && NODE_FLAGS="$NODE_FLAGS --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=$SNAPDIR"
echo "node flags: ${NODE_FLAGS:-(none)}"
# shellcheck disable=SC2086
node $NODE_FLAGS dist/src/cli/main.js agent --config "$TMP/agent.yaml" --metrics-addr 127.0.0.1:0 --detach-on-exit >"$TMP/out" 2>"$TMP/err" &
AGENT=$!
for _ in $(seq 1 6000); do
  [ "$(grep -c '"event":"attached"' "$TMP/out" || true)" -ge "$N" ] && break
  sleep 0.1
done
t1=$(ms)
echo "attached $(grep -c '"event":"attached"' "$TMP/out") of $N cgroups in $((t1 - t0)) ms from start"
for i in $(seq 1 10); do
  sh -c 'echo $$ > "$0" && exec sleep 600 | build/sockprobe many --concurrent 50 --hold' "$ROOT/kubepods/burstable/pod$i/cgroup.procs" >/dev/null 2>&1 &
done
sleep 3
rss() {
  awk '/^(VmRSS|VmHWM)/ { printf "%s %d MB  ", $1, $2 / 1024 }' "/proc/$AGENT/status"
  awk '/^(RssAnon|RssFile)/ { printf "%s %d MB  ", $1, $2 / 1024 }' "/proc/$AGENT/status"
  # The anonymous memory by kind: malloc's main heap ([heap]), glibc's
  # thread arenas (64 MB-aligned heaps), V8's heap pages (256 KB each), and
  # the rest (V8's large objects and code, stacks, mmapped malloc chunks).
  awk 'function hex(s,  i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
    /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); lo = hex(r[1]); size = hex(r[2]) - lo
      kind = $6 == "[heap]" ? "heap" : $6 != "" ? "" : lo % 67108864 == 0 ? "arena" : size == 262144 && lo % 262144 == 0 ? "v8" : "other" }
    /^Rss:/ { if (kind != "") k[kind] += $2 }
    END { printf "malloc [heap] %d MB, arenas %d MB, V8 pages %d MB, other anonymous %d MB  ", k["heap"] / 1024, k["arena"] / 1024, k["v8"] / 1024, k["other"] / 1024 }' "/proc/$AGENT/smaps"
  echo "open fds: $(find "/proc/$AGENT/fd" -mindepth 1 | wc -l)"
}
echo "agent memory, all attached: $(rss)"
ADDR=$(sed -n 's/.*"metrics":"\([^"]*\)".*/\1/p' "$TMP/out")
s0=$(ms)
curl -s "http://$ADDR/metrics" >"$TMP/metrics"
s1=$(ms)
echo "scrape: $((s1 - s0)) ms, $(grep -c '^accel_' "$TMP/metrics") accel series; sockets in the maps: $(awk '/^accel_fastpath_sockets\{/ { s += $2 } END { print s }' "$TMP/metrics")"
echo "agent memory after the scrape: $(rss)"
echo "of which V8 heap (used/total) and external, in MB: $(awk '/^nodejs_heap_size_used_bytes / { u = $2 } /^nodejs_heap_size_total_bytes / { t = $2 } /^nodejs_external_memory_bytes / { e = $2 } END { printf "%d / %d, %d", u / 1048576, t / 1048576, e / 1048576 }' "$TMP/metrics")"
echo "V8 heap spaces (committed/used, MB): $(awk '/^nodejs_heap_space_size_total_bytes/ { match($0, /space="[a-z_]+"/); sp = substr($0, RSTART + 7, RLENGTH - 8); t[sp] = $2 } /^nodejs_heap_space_size_used_bytes/ { match($0, /space="[a-z_]+"/); sp = substr($0, RSTART + 7, RLENGTH - 8); u[sp] = $2 } END { for (sp in t) if (t[sp] >= 524288) printf "%s %.1f/%.1f  ", sp, t[sp] / 1048576, u[sp] / 1048576 }' "$TMP/metrics")"
if [ -n "$SNAPDIR" ]; then
  mkdir -p "$SNAPDIR"
  kill -USR2 "$AGENT"
  # The snapshot is written on the agent's one thread: it answers again when done.
  sleep 0.5
  curl -s -m 120 "http://$ADDR/healthz" >/dev/null || true
  echo "heap snapshot: $(ls "$SNAPDIR"/*.heapsnapshot)"
fi
for k in 1 2 3 4 5; do
  name="podnew$k"
  a=$(ms)
  mkdir "$ROOT/kubepods/burstable/$name"
  until grep -q "\"cgroup\":\"kubepods/burstable/$name\"" "$TMP/out"; do sleep 0.01; done
  b=$(ms)
  echo "new cgroup $k: attached $((b - a)) ms after mkdir"
  sleep 0.3
done
echo "agent memory at the end: $(rss)"
