#!/usr/bin/env bash
# `make base-images`: make the runtime Dockerfiles' default base images resolve on a machine
# that cannot pull them. Images already present (pulled, or built earlier) are kept as they are;
# missing ones are built from Debian: debootstrap a minbase bookworm root, import it, then
# install Debian's python3 / nodejs on top and tag the result with the official name.
set -euo pipefail
cd "$(dirname "$0")"
DOCKER=${DOCKER:-docker}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
NODE_IMAGE=${NODE_IMAGE:-node:20-bookworm-slim}
DEBIAN_BASE=${DEBIAN_BASE:-actionproxy/debian-minbase:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

pull_or_build() {  # image, dockerfile
  have "$1" && { echo "base-images: $1 present"; return; }
  if "$DOCKER" pull -q "$1" >/dev/null 2>&1; then echo "base-images: pulled $1"; return; fi
  debian_base
  echo "base-images: building a stand-in for $1 from Debian"
  "$DOCKER" build -q -t "$1" --build-arg DEBIAN_BASE="$DEBIAN_BASE" -f "$2" . >/dev/null
}

debian_base() {
  have "$DEBIAN_BASE" && return
  command -v debootstrap >/dev/null || { echo "base-images: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "base-images: debootstrap --variant=minbase bookworm"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*  # downloads, not the system
  tar -C "$root" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null
}

pull_or_build "$PYTHON_IMAGE" python.Dockerfile
pull_or_build "$NODE_IMAGE" node.Dockerfile
