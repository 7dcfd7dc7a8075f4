#!/usr/bin/env bash
# Set up this machine for fmnist, idempotently, then run the given command inside the environment:
#   bash scripts/setup.sh fmnist train     # set up, then train the spec's model
#   bash scripts/setup.sh pytest           # set up, then run the whole test suite
# Uses the active virtual environment if there is one, else makes ./.venv; installs the package and its export
# extra with pinned versions (constraints.txt); installs Debian's dataset-fashion-mnist when root with apt-get. What only the
# tests need (the [test] extra, chromium, postgresql) comes when the command runs pytest, or when none is given.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
if [ $# -eq 0 ] || [[ " $* " == *" pytest "* ]]; then
    tests=1
fi

if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv="$VIRTUAL_ENV"
else
    venv="$PWD/.venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
fi
"$venv/bin/python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"fmnist needs Python 3.11 or newer (the Keras 3, JAX and NumPy it pins); this is {sys.version.split()[0]}")
PY
# The export extra (ONNX, LiteRT) always: the tour's `fmnist export` works after any setup.
if [ "$tests" = 1 ]; then package=".[test]"; else package=".[export]"; fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$package"

dataset=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$dataset" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's dataset-fashion-mnist" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
        echo "could not install dataset-fashion-mnist; fmnist will use keras' download instead" >&2
fi

# The web page's test drives Debian's Chromium with Playwright (Playwright's own browser download needs the internet).
if [ "$tests" = 1 ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
        echo "could not install chromium; the web page's browser test will fail" >&2
fi

# The tests start a throwaway PostgreSQL server for `fmnist tune --storage postgresql://...` (initdb, pg_ctl).
if [ "$tests" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
    command -v apt-get >/dev/null; then
    echo "installing Debian's postgresql" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ||
        echo "could not install postgresql; the PostgreSQL tuning test will fail" >&2
    # The package may start its default cluster; the tests start their own, so leave nothing running.
    pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" {print $1, $2}' |
        while read -r version cluster; do pg_ctlcluster "$version" "$cluster" stop; done
fi

if [ $# -gt 0 ]; then
    PATH="$venv/bin:$PATH" exec "$@"
fi
