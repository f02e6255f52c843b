#!/usr/bin/env bash
# Set up (.venv from uv.lock) and run the linters, the type checker and the whole test
# suite; with TEST_COVERAGE=1, under coverage (service processes the tests start are
# measured too). Extra arguments go to pytest, e.g. `./infra/test.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/venv.sh
bash infra/system-packages.sh  # nginx, chromium, wrk: the tests use them, never skip them
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers, a whole module each (module fixtures, and the browser modules own the main
# thread while they run), handed out in the order tests/conftest.py gives (slowest first);
# TEST_WORKERS=0 runs everything in this process.
pytest_args=(-n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@")
if [[ "${TEST_COVERAGE:-0}" != "1" ]]; then
  # Not in CI by default: tracing makes every Python process of the run (the services
  # the tests start included) slower, which a slow machine cannot afford within its time.
  exec .venv/bin/pytest "${pytest_args[@]}"
fi
.venv/bin/coverage erase
status=0
.venv/bin/coverage run -m pytest "${pytest_args[@]}" || status=$?
.venv/bin/coverage combine --quiet || true
.venv/bin/coverage report || true
exit "$status"
