"""Handing freed memory back to the system, where the C library allows it (glibc).

glibc keeps what a process frees for its next allocations. Two kinds of freed memory are
worth giving back: what start-up leaves behind (imports, building the app: holes in the
heap that nothing refills), and argon2's buffers after a burst of hashing
(auth_service/passwords.py). `malloc_trim(0)` returns free pages anywhere in the
heap, not only at its top. Elsewhere (musl, macOS) these calls do nothing.
`resident_mb` reads what a process holds (the bench and the tests report it).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def one_malloc_arena() -> None:
    """Every thread allocates from glibc's main arena, whose top malloc_trim can shrink
    (not a thread arena's). Call before any thread starts."""
    if (libc := _libc()) is not None:
        libc.mallopt(M_ARENA_MAX, 1)


def trim_function() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None where there is no such call."""
    if (libc := _libc()) is None:
        return None
    trim: Callable[[int], object] = libc.malloc_trim
    return lambda: trim(0)


def give_back_free_memory() -> None:
    """Return the free memory of every arena now: at the end of a service's start-up."""
    if (trim := trim_function()) is not None:
        trim()


def resident_mb(pid: int | str = "self") -> float:
    """A process's resident set (VmRSS) in MiB, from /proc (Linux); 0 for a kernel thread."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
