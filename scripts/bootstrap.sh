#!/usr/bin/env bash
# Makes a fresh Debian 12 machine (as root) ready to run accel and its tests:
# Debian packages, npm dependencies, the BPF objects, the native probe and
# the TypeScript build. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (accel loads BPF programs and manages cgroups)" >&2
  exit 1
fi

# curl and socat: unmodified clients in the interception tests; python3: a
# test client that rebuilds its socket with TCP_REPAIR; sockperf, iperf3 and
# haproxy: the bench's load tools and reference proxy; clang-format: `npm run
# lint` checks the C code's format; prometheus: the agent test scrapes the
# agent with a real Prometheus (started by the test on loopback; its promtool
# checks the exposition); bpftrace: verify --bpftrace's runner is tested
# with a uprobe (kprobes and kfunc probes are tested where the kernel has them);
# mmdebstrap, podman and runc: the image test builds the container image from
# Debian packages (scripts/build-image.sh, about 2 minutes) and runs the agent
# from it (runc: crun refuses hosts with cgroup v1 and v2 side by side);
# iptables: the bench's inbound scenario steers arriving connections with a
# TPROXY rule inside its own network namespace.
PACKAGES=(clang llvm libbpf-dev bpftool iproute2 make gcc libc6-dev util-linux curl socat python3 sockperf iperf3 haproxy clang-format prometheus bpftrace iptables mmdebstrap podman runc)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

npm run --silent build
