#!/usr/bin/env bash
# Test topology on one machine:
#
#   netns <prefix>app  (10.200.0.1/24, fd00:200::1/64) --veth-- netns <prefix>remote (10.200.0.2/24, fd00:200::2/64)
#
# The addresses exist only inside these two namespaces. Usage:
#   scripts/setup-netns.sh up|down [prefix]      (prefix defaults to "accel-")
set -euo pipefail
cmd=${1:-}
prefix=${2:-accel-}
app="${prefix}app"
remote="${prefix}remote"
veth_app="${prefix:0:8}a0"
veth_remote="${prefix:0:8}r0"

up() {
  down quiet
  ip netns add "$app"
  ip netns add "$remote"
  ip link add "$veth_app" netns "$app" type veth peer name "$veth_remote" netns "$remote"
  for ns in "$app" "$remote"; do ip -n "$ns" link set lo up; done
  ip -n "$app" addr add 10.200.0.1/24 dev "$veth_app"
  ip -n "$app" addr add fd00:200::1/64 dev "$veth_app" nodad
  ip -n "$remote" addr add 10.200.0.2/24 dev "$veth_remote"
  ip -n "$remote" addr add fd00:200::2/64 dev "$veth_remote" nodad
  ip -n "$app" link set "$veth_app" up
  ip -n "$remote" link set "$veth_remote" up
  echo "up: $app (10.200.0.1, fd00:200::1) <-> $remote (10.200.0.2, fd00:200::2)"
}

down() {
  for ns in "$app" "$remote"; do
    if ip netns list | grep -qw "^$ns"; then
      # End what still runs in the namespace (only processes inside it).
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
  [ "${1:-}" = quiet ] || echo "down: $app $remote"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down [prefix]" >&2; exit 2 ;;
esac
