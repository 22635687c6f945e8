#!/usr/bin/env bash
# The README's test command: installs everything, lints, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
echo "[test] ruff"
.venv/bin/ruff check .
echo "[test] pytest"
.venv/bin/python -m pytest -q -ra "$@"
