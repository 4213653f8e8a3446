#!/usr/bin/env bash
# The two images every image of k8s/images/ starts from, made here with no registry (make image-base):
#   fintech-base   Debian bookworm from Debian's own packages (mmdebstrap): python3 (3.11), OpenMP
#                  (XGBoost's libgomp), the CA certificates and the user 10001 the pods run as; the
#                  standard library's bytecode of python -O too (the root filesystem is read-only).
#   fintech-build  fintech-base with uv: the build stages install into /opt/venv with it, and only
#                  /opt/venv goes on into an image, so no image holds uv, pip or a compiler.
# Each is made once and reused while it exists. Usage: build.sh ENGINE BASE_TAG BUILD_TAG [BUILD_FLAGS...]
set -euo pipefail
engine=$1 base=$2 build=$3
shift 3
here=$(dirname "$0")

if $engine image inspect "$base" >/dev/null 2>&1; then
  echo "$base: already made"
else
  echo "$base: mmdebstrap bookworm (minbase + python3, libgomp1, ca-certificates)"
  mmdebstrap --quiet --variant=minbase --include=python3,libgomp1,ca-certificates \
    --customize-hook='echo "fintech:x:10001:10001::/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "fintech:x:10001:" >> "$1/etc/group"' \
    --customize-hook='chroot "$1" python3 -O -m compileall -q /usr/lib/python3.11 || true' \
    bookworm - \
    | $engine import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'ENV PYTHONUNBUFFERED=1' - "$base"
fi

if $engine image inspect "$build" >/dev/null 2>&1; then
  echo "$build: already made"
else
  $engine build "$@" --build-arg "BASE=$base" -t "$build" -f "$here/Dockerfile.build" "$here"
fi
