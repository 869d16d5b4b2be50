#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root: set-up, linters, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_spec.py -x).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GPROCKET_VENV:-/opt/gprocket/venv}
"$here/scripts/setup.sh"
cd "$here"
# The installed copy is what the tests exercise, never the checkout.
unset PYTHONPATH

echo "== ruff"
"$venv/bin/ruff" check gprocket capsetup tests bench examples
echo "== mypy"
"$venv/bin/mypy"
echo "== pytest"
# The checkout must not shadow the installed package: -P keeps the working
# directory off sys.path.
"$venv/bin/python" -P -m pytest -p no:cacheprovider --rootdir "$here" -c "$here/pyproject.toml" \
    "${@:-$here/tests}"
