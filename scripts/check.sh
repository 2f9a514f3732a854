#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, installs the package
# with its test dependencies (pinned in pyproject.toml), then runs ruff, mypy
# (strict, on the package) and pytest.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "== ruff"
.venv/bin/ruff check src tests examples bench scripts
.venv/bin/ruff format --check src tests examples bench scripts
echo "== mypy (strict)"
.venv/bin/mypy src/mapreduce
echo "== pytest"
.venv/bin/python -m pytest "$@"
