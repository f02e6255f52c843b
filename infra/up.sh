#!/usr/bin/env bash
# Set up (.venv from uv.lock, development keys) and run the whole local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/venv.sh
.venv/bin/python -m auth_service keys generate
exec .venv/bin/python -m infra.stack "$@"
