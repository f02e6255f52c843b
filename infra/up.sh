#!/usr/bin/env bash
# Set up (.venv, dependencies, development keys) and run the whole local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/python -m auth_service keys generate
exec .venv/bin/python -m infra.stack
