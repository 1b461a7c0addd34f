#!/usr/bin/env bash
# Create the compose topology's development state in deploy/compose/state (or $1): the
# development PKI (CA, gateway, connectors, clients), the gateway's keys and settings, each
# connector's witness key, and the generated agency databases. Development only.
#
#   deploy/compose/prepare.sh [STATE_DIR]
#
# Runs with the project's Python (the repository's .venv after `make lint`, or $PYTHON), or,
# with XIEZHI_TOOLS_IMAGE set, inside the tools image (no Python needed on the host).
# The services run as uid 10001: when run as root, the folder is handed to that uid.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${1:-$here/state}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"

if [[ -n "${XIEZHI_TOOLS_IMAGE:-}" ]]; then
  docker run --rm --user "$(id -u):$(id -g)" -v "$state:/out" --entrypoint python "$XIEZHI_TOOLS_IMAGE" \
    /opt/xiezhi/deploy/compose/prepare.py /out --mount /srv/xiezhi
else
  python="${PYTHON:-$repo/.venv/bin/python}"
  [[ -x "$python" ]] || { echo "prepare.sh: no $python — run 'make lint' first or set PYTHON" >&2; exit 2; }
  (cd "$repo" && "$python" deploy/compose/prepare.py "$state" --mount /srv/xiezhi)
fi

if [[ "$(id -u)" == 0 ]]; then
  chown -R 10001:10001 "$state"
else
  echo "prepare.sh: not root — make $state readable by uid 10001 (the containers' user), e.g. sudo chown -R 10001:10001 $state" >&2
fi
echo "next: docker compose -f $here/compose.yaml up -d"
