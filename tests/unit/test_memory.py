"""glibc keeps freed heap below the heap's top; `give_back_free_memory` hands it back."""

from __future__ import annotations

import subprocess
import sys

from common.memory import trim_function
from tests.support import service_missing

# Chunks above pymalloc's 512-byte limit come from glibc's heap; one kept after them
# holds the heap's top, so freeing the rest leaves a hole glibc does not trim itself.
SCRIPT = """
from common.memory import give_back_free_memory, one_malloc_arena, resident_mb

one_malloc_arena()
freed = [bytes(range(256)) * 8 for _ in range(20_000)]
kept = bytes(range(256)) * 8
del freed
before = resident_mb()
give_back_free_memory()
print(before, resident_mb())
"""


def test_freed_heap_below_the_top_goes_back() -> None:
    """What a burst freed (argon2's buffers, start-up's leftovers) is not kept: the
    40 MB freed under a live chunk leave the resident set once trimmed."""
    if trim_function() is None:
        service_missing("glibc's malloc_trim", "not a glibc system")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    before, after = map(float, done.stdout.split())
    assert after < before - 20, (before, after)
