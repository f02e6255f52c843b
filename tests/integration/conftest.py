"""What most integration tests share: an HTTP client for the stack's auth, its OpenID
metadata as an application library reads it, and a service registered with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session

from tests.conftest import Stack
from tests.support import RESOURCE_SECRET

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


@pytest.fixture
def service() -> Iterator[OAuth2Session]:
    """The test stack's `test-api`: a confidential client with no redirect URIs, which
    introspects tokens and gets its own (client credentials)."""
    with OAuth2Session(
        client_id="test-api",
        client_secret=RESOURCE_SECRET,
        token_endpoint_auth_method="client_secret_basic",
    ) as session:
        yield session
