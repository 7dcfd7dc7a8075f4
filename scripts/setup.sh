#!/usr/bin/env bash
# Set up this machine for fmnist, idempotently, then run the given command inside the environment:
#   bash scripts/setup.sh fmnist train     # set up, then train the spec's model
#   bash scripts/setup.sh pytest           # set up, then run the whole test suite
# Uses the active virtual environment if there is one, else makes ./.venv; installs the package with
# pinned versions (constraints.txt); installs Debian's dataset-fashion-mnist when root with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv="$VIRTUAL_ENV"
else
    venv="$PWD/.venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
fi
"$venv/bin/python" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"fmnist needs Python 3.10 or newer (Keras 3); this is {sys.version.split()[0]}")
PY
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"

dataset=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$dataset" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's dataset-fashion-mnist" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
        echo "could not install dataset-fashion-mnist; fmnist will use keras' download instead" >&2
fi

# The web page's test drives Debian's Chromium with Playwright (Playwright's own browser download needs the internet).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
        echo "could not install chromium; the web page's browser test will fail" >&2
fi

if [ $# -gt 0 ]; then
    PATH="$venv/bin:$PATH" exec "$@"
fi
