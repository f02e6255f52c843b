"""English and Russian: message catalogues (`locales/<lang>.json`, one key per message) and
how a request's language is chosen: the switch's cookie, else `Accept-Language`, else English.

A message may be a list of plural forms, chosen by its `n` argument (English: one, other;
Russian: one, few, many). A key missing from Russian falls back to English; a test keeps
both catalogues to the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "ru")
DEFAULT = "en"
LANG_COOKIE = "lang"
LOCALES = Path(__file__).parent / "locales"


@cache
def catalogue(lang: str) -> Mapping[str, str | list[str]]:
    loaded: dict[str, str | list[str]] = json.loads((LOCALES / f"{lang}.json").read_text("utf-8"))
    return loaded


def plural_index(lang: str, n: int) -> int:
    if lang == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return 0
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return 1
        return 2
    return 0 if n == 1 else 1


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT

    def __call__(self, key: str, **args: Any) -> str:
        message = catalogue(self.lang).get(key) or catalogue(DEFAULT).get(key)
        if message is None:
            return key
        if isinstance(message, list):
            n = int(args.get("n", 0))
            message = message[min(plural_index(self.lang, n), len(message) - 1)]
        return message.format(**args) if args else message


def from_accept_language(header: str) -> str | None:
    """The supported language the browser prefers most (RFC 9110 q-values), if any;
    among equal qualities, the one listed first."""
    candidates: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if primary in LANGUAGES and quality > 0:
            candidates.append((quality, -position, primary))
    return max(candidates)[2] if candidates else None


def choose(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    return from_accept_language(accept_language or "") or DEFAULT
