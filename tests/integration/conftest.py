"""What most integration tests share: an HTTP client for the stack's auth, and its OpenID
metadata as an application library reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack

DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.auth.url, timeout=30) as client:
        yield client


@pytest.fixture
def meta(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain HTTP on 127.0.0.1
    answer: dict[str, Any] = http.get(DISCOVERY).json()
    return answer
