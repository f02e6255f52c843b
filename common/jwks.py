"""Verifying with the auth service's JWKS (FILMS_JWKS_URL, MAILER_JWKS_URL) instead of a PEM file.

Keys are fetched once at start (retrying in the background while auth is unreachable) and
cached. A token signed with an unknown `kid` (a rotation) triggers a re-fetch, at most once
per cooldown, so forged kids cannot turn films into a load generator against auth. A
periodic refresh drops retired keys. While auth is down, the cached keys keep working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from prometheus_client import Counter

from common.jwt import ALGORITHM, TokenVerifier, UnknownKey
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FETCHES = Counter("jwks_fetches_total", "JWKS fetches by outcome", ["outcome"])


def parse_jwks(document: Any) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for jwk in document.get("keys", []) if isinstance(document, dict) else []:
        if jwk.get("kty") != "RSA" or jwk.get("alg", ALGORITHM) != ALGORITHM or "kid" not in jwk:
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        key = jwt.PyJWK(jwk).key
        if isinstance(key, RSAPublicKey):
            keys[jwk["kid"]] = key
    return keys


class JwksVerifier:
    def __init__(
        self,
        url: str,
        *,
        issuer: str,
        audience: str,
        cooldown_seconds: float = 30.0,
        refresh_seconds: float = 300.0,
        require_at_jwt: bool = False,
    ) -> None:
        self.url = url
        self._issuer, self._audience = issuer, audience
        self._require_at_jwt = require_at_jwt
        self._cooldown = cooldown_seconds
        self._refresh = refresh_seconds
        self._verifier: TokenVerifier | None = None
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._client = httpx.AsyncClient(timeout=3.0)
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._verifier is not None

    async def start(self) -> None:
        await self.fetch()
        self._task = asyncio.create_task(self._keep_fresh(), name="jwks-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._client.aclose()

    async def fetch(self) -> bool:
        """Fetch the key set; True if it was fetched and parsed. Failures keep the cache."""
        async with self._lock:
            self._last_attempt = time.monotonic()
            try:
                response = await self._client.get(self.url)
                response.raise_for_status()
                keys = parse_jwks(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                FETCHES.labels("failed").inc()
                log.warning(
                    "fetching %s failed (%s); keeping %d cached key(s)",
                    self.url,
                    exc,
                    len(self._verifier.kids) if self._verifier else 0,
                )
                return False
            if not keys:
                FETCHES.labels("empty").inc()
                log.warning("%s holds no usable RS256 key; keeping the cache", self.url)
                return False
            self._verifier = TokenVerifier(
                keys,
                issuer=self._issuer,
                audience=self._audience,
                require_at_jwt=self._require_at_jwt,
            )
            FETCHES.labels("ok").inc()
            return True

    async def _keep_fresh(self) -> None:
        while True:
            # Until the first success, retry soon; afterwards, refresh now and then.
            await asyncio.sleep(self._refresh if self.ready else min(self._cooldown, 2.0))
            await self.fetch()

    def verify(self, token: str) -> dict[str, Any]:
        if self._verifier is None:
            raise UnknownKey("no keys fetched yet")
        return self._verifier.verify(token)

    async def refresh_unknown(self) -> bool:
        """Called on an unknown kid: re-fetch unless one was tried within the cooldown."""
        if time.monotonic() - self._last_attempt < self._cooldown:
            return False
        return await self.fetch()
