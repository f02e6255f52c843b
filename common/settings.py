"""Small helpers for the services' settings classes."""

from __future__ import annotations


def comma_separated(value: object) -> object:
    """`a, b,c` from the environment as ["a", "b", "c"] (a list passes through)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
