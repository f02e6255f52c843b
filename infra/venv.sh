#!/usr/bin/env bash
# Create .venv and install exactly what uv.lock pins: the runtime dependencies, the dev
# group (the local stack's broker and SMTP server, the test tools) and this project.
# Sourced by up.sh and test.sh; needs only Python >= 3.11 and the package registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.9  # the same as in pyproject.toml's dev group, so `uv sync` keeps it
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/uv ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m ensurepip --upgrade >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
# --locked: fail, rather than quietly re-resolve, when pyproject.toml and uv.lock disagree.
# --compile-bytecode, and compileall for our own packages: uv installs no .pyc files, and
# where PYTHONDONTWRITEBYTECODE is set (many CI images set it) Python never writes them,
# so every process would compile SQLAlchemy, pydantic, FastAPI… from source at each start
# (several seconds of CPU each: the tests start hundreds of processes). Both skip files
# already compiled, so a second run costs little.
UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --locked --quiet --python .venv/bin/python \
  --compile-bytecode
.venv/bin/python -m compileall -q -j0 \
  auth_service films_service mailer_service web_service common infra bench tests
