"""Start-up hands the heap's holes back: what imports and building an app freed."""

from __future__ import annotations

import subprocess
import sys

from common.memory import trim_function
from tests.support import service_missing

SCRIPT = """
import auth_service.app, films_service.app  # the imports of a service's start-up
from common.memory import give_back_free_memory, resident_mb

before = resident_mb()
give_back_free_memory()
print(before, resident_mb())
"""


def test_free_memory_left_by_start_up_goes_back() -> None:
    """A service's imports leave freed heap that glibc would keep: more than 1 MB."""
    if trim_function() is None:
        service_missing("glibc's malloc_trim", "not a glibc system")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    before, after = map(float, done.stdout.split())
    assert after < before - 1, (before, after)
