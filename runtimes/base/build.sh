#!/usr/bin/env bash
# `make base-images`: make the runtime Dockerfiles' base images resolve on a machine that cannot
# pull them. Images already present (pulled, or built earlier) are kept as they are; missing
# ones are built from Debian: debootstrap a minbase root of the suite that carries the version,
# import it, then install Debian's python3 / nodejs on top and tag the result with the
# official name. bookworm: Python 3.11 (and Node.js 18 standing in for node:20); trixie:
# Python 3.13; sid: Python 3.14 and Node.js 24. Independent stand-ins build in parallel.
set -euo pipefail
cd "$(dirname "$0")"
DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# official name | Dockerfile | Debian suite | the Python package, when not the suite's python3
STAND_INS=(
  "${PYTHON_IMAGE:-python:3.11-slim-bookworm}|python.Dockerfile|bookworm|python3"
  "${NODE_IMAGE:-node:20-bookworm-slim}|node.Dockerfile|bookworm|python3"
  "python:3.13-slim-trixie|python.Dockerfile|trixie|python3"
  "python:3.14-slim-trixie|python.Dockerfile|sid|python3.14"
  "node:24-trixie-slim|node.Dockerfile|sid|python3"
)
ONLY=${BASE_IMAGES:-}  # e.g. "python:3.11-slim-bookworm node:20-bookworm-slim": just these

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

debian_base() {  # suite
  local image="actionproxy/debian-minbase:$1" root
  have "$image" && return
  command -v debootstrap >/dev/null || { echo "base-images: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
  root=$(mktemp -d)
  echo "base-images: debootstrap --variant=minbase $1"
  debootstrap --variant=minbase "$1" "$root" "$MIRROR" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*  # downloads, not the system
  tar -C "$root" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$image" >/dev/null
  rm -rf "$root"
}

pull_or_build() {  # official name, Dockerfile, suite, Python package
  have "$1" && { echo "base-images: $1 present"; return; }
  if "$DOCKER" pull -q "$1" >/dev/null 2>&1; then echo "base-images: pulled $1"; return; fi
  debian_base "$3"
  echo "base-images: building a stand-in for $1 from Debian $3"
  "$DOCKER" build -q -t "$1" --build-arg DEBIAN_BASE="actionproxy/debian-minbase:$3" \
    --build-arg PYTHON="$4" --build-arg STANDS_FOR="$1" -f "$2" . >/dev/null
}

# one suite's stand-ins after another (they share its root); the suites side by side
declare -A by_suite=()
for entry in "${STAND_INS[@]}"; do
  IFS='|' read -r name file suite python <<<"$entry"
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  by_suite[$suite]+="$entry;"
done
pids=()
for suite in "${!by_suite[@]}"; do
  (
    IFS=';' read -ra entries <<<"${by_suite[$suite]}"
    for entry in "${entries[@]}"; do
      [ -n "$entry" ] || continue
      IFS='|' read -r name file suite python <<<"$entry"
      pull_or_build "$name" "$file" "$suite" "$python"
    done
  ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
