#!/usr/bin/env bash
# Every wheel the production install needs, for `deploy/install.sh --wheelhouse DIR` without a network (the
# container build, air-gapped sites): melvin-trio itself, its runtime dependencies, and the model packages.
#
#   deploy/wheelhouse.sh DIR
set -euo pipefail
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:?usage: deploy/wheelhouse.sh DIR}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
"$PYTHON" -m pip --disable-pip-version-check wheel --quiet --wheel-dir "$DIR" "$SOURCE[models]"
ls "$DIR"
