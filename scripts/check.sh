#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates .venv, installs the package
# with its test dependencies (pinned in pyproject.toml), then runs ruff, mypy
# (strict, on the package) and pytest; installs chromium (for the status page
# tests) and nftables (for the namespace fault tests) when they are missing.
# Extra arguments go to pytest.
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
# The status page tests look at the pages in a real headless browser.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "== chromium is missing: installing it with apt-get (for tests/test_status_page.py)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        echo "error: chromium is not installed (tests/test_status_page.py needs it) and this" \
            "is not root; install it (sudo apt-get install chromium) and run again" >&2
        exit 1
    fi
fi
# The fault tests on several "machines" (tests/test_netbed.py: network namespaces) need the
# ip command and, for one-way loss and slow links, nft.  Without root they skip.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "== ${missing[*]} missing: installing with apt-get (for tests/test_netbed.py)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "note: ${missing[*]} not installed and this is not root:" \
            "tests/test_netbed.py will skip" >&2
    fi
fi
echo "== pytest"
.venv/bin/python -m pytest "$@"
