"""Clients that prove themselves with a JWT they sign, not a secret they send:
`private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9).

A client registered with `jwks` (its public keys, in AUTH_OAUTH_CLIENTS), or with the
`jwks_uri` it publishes them at (`ClientKeySets`), sends
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a
`client_assertion` signed with a private key that never leaves it: auth holds nothing that
would let anyone else sign one, and nothing that could leak from it would. An assertion is
taken when

- it is signed by one of the client's keys (the one its `kid` names; without a `kid`,
  any of them), with an algorithm for that key: never `none`, and never HMAC, so a
  public key is never used as a shared secret;
- it is typed as a client assertion, or not typed (`typ` absent, `JWT`, or RFC
  7523bis's `client-authentication+jwt`): a JWT of another kind the client signed (a
  DPoP proof, a request object…) is not one;
- `iss` and `sub` are the client's id;
- `aud` is auth, as one value: its issuer, as RFC 7523bis asks, so that an assertion a
  client signed for another server, whatever URL that server named, is never taken here;
  or, where the deployment allows it for older client libraries
  (AUTH_CLIENT_ASSERTION_AUDIENCE), the URL of an endpoint that takes assertions, under
  AUTH_PUBLIC_URL (the caller's `audiences`);
- it has not expired and expires at most an hour ahead, and `nbf` and `iat`, where given,
  are not ahead (give or take `LEEWAY` for clocks);
- its `jti` is new from this client: an assertion is used once (`spend` remembers it, in
  the database so that every instance knows, until it can no longer verify; housekeeping
  keeps it `SKEW` longer, for instances whose clocks differ).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.errors import ClientRefused
from auth_service.models import ClientAssertion

log = logging.getLogger(__name__)

JWKS_FETCHES = Counter(
    "auth_client_jwks_fetches_total", "Fetches of clients' keys at their jwks_uri", ["outcome"]
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}
SIGNING_ALGORITHMS = [*RSA_ALGORITHMS, *CURVE_ALGORITHMS.values()]
CURVE_TYPES = {"P-256": "EC", "P-384": "EC", "P-521": "EC", "Ed25519": "OKP"}
# A JWK's members that belong to a private or secret key (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_KEYS = 10  # a client's signing keys, given or published
MAX_PUBLISHED = 100  # in a key set fetched from a jwks_uri, whatever their use
MAX_JWKS_BYTES = 64 * 1024
FETCH_SECONDS = 3.0  # a whole fetch of a jwks_uri
REFRESH_SECONDS = 300.0  # how long fetched keys are used before they are fetched again
MAX_STALE = 3600.0  # how long they are used at most, where no fetch succeeds since
LIFETIME = timedelta(hours=1)  # the furthest ahead an assertion may expire
LEEWAY = 60  # seconds, for the client's clock
SKEW = timedelta(minutes=5)  # how long a spent jti is kept past its end, for auth's clocks
# What an assertion's `typ` may be, in lower case, "application/" left out (RFC 7515 §4.1.9).
ASSERTION_TYPES = frozenset({None, "jwt", "client-authentication+jwt"})


class MalformedAssertion(ValueError):
    """Not a JWT that names its client in `iss`: RFC 6749's invalid_request."""


@dataclass(frozen=True)
class ClientKey:
    """One of a client's public keys, and the algorithms it may sign with."""

    key: Any  # cryptography's public key
    algorithms: tuple[str, ...]


def signing_keys(jwks: dict[str, Any]) -> dict[str | None, ClientKey]:
    """A client's `jwks`, as its keys by `kid` (None: its one key that has none).
    ValueError, saying what is wrong, for anything but a JWK Set of 1 to 10 public
    signing keys: RSA of 2048 to 8192 bits with a small exponent, EC on P-256, P-384 or
    P-521, or Ed25519; each with a `kid` of its own where there are several."""
    keys = jwks.get("keys")
    if set(jwks) != {"keys"} or not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError(f'jwks is {{"keys": [...]}}, with 1 to {MAX_KEYS} public keys')
    found: dict[str | None, ClientKey] = {}
    for jwk in keys:
        kid, key = _signing_key(jwk)
        if kid in found or (kid is None and len(keys) > 1):
            raise ValueError("jwks: where there are several keys, each has a kid of its own")
        found[kid] = key
    return found


def published_keys(document: object) -> dict[str | None, ClientKey]:
    """The signing keys auth takes from a key set a client publishes (at its
    `jwks_uri`), which may hold others: encryption keys, and kinds or sizes auth does not
    take, are left out. ValueError where it is no key set, holds a private or secret key,
    or leaves no key, or several where one has no `kid` or two share one."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or len(keys) > MAX_PUBLISHED:
        raise ValueError(f"not a JWK Set of at most {MAX_PUBLISHED} keys")
    found: dict[str | None, ClientKey] = {}
    for jwk in keys:
        try:
            kid, key = _signing_key(jwk)
        except PrivateKey:
            raise
        except ValueError:
            continue  # not for signing, or not a kind auth takes
        if kid in found:
            raise ValueError(f"two signing keys are named {kid!r}")
        found[kid] = key
    if not found:
        raise ValueError("no signing key auth takes")
    if len(found) > MAX_KEYS:  # an assertion without a kid may be tried against each
        raise ValueError(f"more than {MAX_KEYS} signing keys")
    if None in found and len(found) > 1:
        raise ValueError("several signing keys, not each with a kid")
    return found


class PrivateKey(ValueError):
    """A JWK with a private or secret key's members, where only public keys belong."""


def _signing_key(jwk: object) -> tuple[str | None, ClientKey]:
    """A JWK's `kid` and key, where it is a public signing key auth takes; else
    ValueError saying why (PrivateKey for a private or secret one)."""
    if not isinstance(jwk, dict):
        raise ValueError("jwks: a key is a JSON object (a JWK)")
    if PRIVATE_MEMBERS & jwk.keys():
        raise PrivateKey("jwks holds a private or secret key: give the public half alone")
    operations = jwk.get("key_ops", ["verify"])
    if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations):
        raise ValueError('jwks: a key\'s "key_ops" is a list of strings')
    if jwk.get("use", "sig") != "sig" or "verify" not in operations:
        raise ValueError('jwks: a key is for signing ("use": "sig", or no "use")')
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("jwks: a kid is a string")
    return kid, _client_key(jwk)


def _client_key(jwk: dict[str, Any]) -> ClientKey:
    kty, curve = jwk.get("kty"), jwk.get("crv")
    algorithms: tuple[str, ...]
    if kty == "RSA":
        algorithms = RSA_ALGORITHMS
    elif isinstance(curve, str) and CURVE_TYPES.get(curve) == kty:
        algorithms = (CURVE_ALGORITHMS[curve],)
    else:
        raise ValueError("jwks: a key is RSA, EC on P-256, P-384 or P-521, or OKP Ed25519")
    if "alg" in jwk:
        if jwk["alg"] not in algorithms:
            raise ValueError(f"jwks: alg {jwk['alg']!r} is not one for its key")
        algorithms = (jwk["alg"],)
    try:
        key = jwt.PyJWK(jwk, algorithms[0]).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"jwks: a {kty} key could not be read") from exc
    if isinstance(key, RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("jwks: an RSA key has 2048 bits at least")
        if key.key_size > 8192 or key.public_numbers().e > 2**32:
            # each verification would cost auth more than the signature is worth
            raise ValueError("jwks: an RSA key has 8192 bits at most, and a small exponent")
    return ClientKey(key, algorithms)


def asserted_client(assertion: str) -> str:
    """The client_id an assertion names (its `iss`), read before anything is checked;
    MalformedAssertion where it is not a JWT or names none."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise MalformedAssertion from exc
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise MalformedAssertion
    return issuer


def verified(
    keys: dict[str | None, ClientKey], client_id: str, assertion: str, audiences: Collection[str]
) -> tuple[str, int]:
    """The assertion's `jti` and `exp`, once it is shown to be the client's and meant for
    auth, now (the module's rules, bar the `jti` being new: `spend`); else ClientRefused."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise ClientRefused from exc
    if _assertion_type(header.get("typ")) not in ASSERTION_TYPES:
        raise ClientRefused
    claims = _signed_by_one(keys, header.get("kid"), assertion)
    audience, jti, expires = claims["aud"], claims["jti"], claims["exp"]
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    if claims["iss"] != client_id or claims["sub"] != client_id:
        raise ClientRefused
    if not isinstance(audience, str) or audience not in audiences:
        raise ClientRefused
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise ClientRefused
    furthest = datetime.now(UTC) + LIFETIME + timedelta(seconds=LEEWAY)
    if not isinstance(expires, int | float) or expires > furthest.timestamp():
        raise ClientRefused  # a string PyJWT read as a number, or too far ahead
    return jti, int(expires)


def _assertion_type(typ: object) -> str | None:
    """A `typ` as ASSERTION_TYPES holds it (`?` for what is no string)."""
    if typ is None:
        return None
    if not isinstance(typ, str):
        return "?"
    return typ.lower().removeprefix("application/")


def _signed_by_one(keys: dict[str | None, ClientKey], kid: object, assertion: str) -> Any:
    """The claims of an assertion signed by the key its `kid` names, or (no `kid`, or the
    client's only key has none) by one of the client's keys; else ClientRefused."""
    if isinstance(kid, str) and kid in keys:
        tried = [keys[kid]]
    elif kid is None or (isinstance(kid, str) and list(keys) == [None]):
        tried = list(keys.values())
    else:
        raise ClientRefused
    for key in tried:
        try:
            return jwt.decode(
                assertion,
                key.key,
                algorithms=list(key.algorithms),
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_aud": False},
                leeway=LEEWAY,
            )
        except (jwt.InvalidAlgorithmError, jwt.InvalidSignatureError):
            continue  # another of its keys may have signed it
        except jwt.PyJWTError as exc:
            raise ClientRefused from exc
    raise ClientRefused


def header_kid(assertion: str) -> object:
    """The `kid` an assertion's header names (None: none), before anything is checked;
    ClientRefused for what has no readable header."""
    try:
        return jwt.get_unverified_header(assertion).get("kid")
    except jwt.PyJWTError as exc:
        raise ClientRefused from exc


class ClientKeySets:
    """The keys of the clients that publish them at a `jwks_uri`, so that they rotate
    them without a change here. Fetched when first needed and used `refresh` seconds;
    fetched again early for a `kid` not among them (the client's new key), at most once
    per `cooldown` per client (counted from the end of the last fetch), so that made-up
    kids cannot make auth a load on the client's server. A fetch takes `FETCH_SECONDS`
    at most, whole. One that fails, or brings no key set, keeps the keys there were
    (logged, and counted in auth_client_jwks_fetches_total), for `MAX_STALE` at most: a
    key the client withdrew is not taken for ever because its server cannot be reached.
    While a fetch is under way, an assertion whose key is known is not held up by it."""

    def __init__(
        self,
        cooldown: float,
        refresh: float = REFRESH_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        transport: Any = None,  # httpx's, for the tests
    ) -> None:
        self.cooldown, self.refresh, self._clock = cooldown, refresh, clock
        self._transport = transport
        self._keys: dict[str, tuple[dict[str | None, ClientKey], float]] = {}
        self._tried: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: Any = None  # httpx.AsyncClient, made at the first fetch

    async def keys(self, client_id: str, uri: str, kid: object) -> dict[str | None, ClientKey]:
        """The client's keys, fetched first where they are not known, old, or lack `kid`
        (and the cooldown allows); empty where there are none to use."""
        known = self._usable(client_id)
        if known is not None and _fits(known, kid):
            lock = self._locks.get(client_id)
            if self._fresh(client_id) or (lock is not None and lock.locked()):
                return known  # no fetch is needed, or one is under way: none to wait for
        async with self._locks.setdefault(client_id, asyncio.Lock()):
            known = self._usable(client_id)
            waited = self._clock() - self._tried.get(client_id, -math.inf)
            current = known is not None and self._fresh(client_id) and _fits(known, kid)
            if not current and waited >= self.cooldown:
                try:
                    fetched = await self._fetch(client_id, uri)
                finally:  # counted from its end, whatever the end: a slow fetch, or one
                    self._tried[client_id] = self._clock()  # cancelled, starts no next
                if fetched is not None:
                    self._keys[client_id] = fetched, self._clock()
        return self._usable(client_id) or {}

    def _fresh(self, client_id: str) -> bool:
        """Whether its keys were fetched less than `refresh` seconds ago."""
        fetched_at = self._keys.get(client_id, (None, -math.inf))[1]
        return self._clock() - fetched_at < self.refresh

    def _usable(self, client_id: str) -> dict[str | None, ClientKey] | None:
        """The keys last fetched, unless that was more than MAX_STALE ago."""
        keys, fetched_at = self._keys.get(client_id, (None, 0.0))
        if keys is not None and self._clock() - fetched_at >= MAX_STALE:
            return None
        return keys

    async def _fetch(self, client_id: str, uri: str) -> dict[str | None, ClientKey] | None:
        try:
            async with asyncio.timeout(FETCH_SECONDS):
                body = await self._get(uri)
            keys = published_keys(json.loads(body))
        except Exception as exc:  # whatever its server sends or does: the keys stay
            JWKS_FETCHES.labels("failed").inc()
            log.warning(
                "client %s: fetching its keys from %s failed (%s: %.200s); keeping %d",
                client_id,
                urlsplit(uri).hostname,
                type(exc).__name__,
                exc,
                len(self._usable(client_id) or {}),
            )
            return None
        JWKS_FETCHES.labels("ok").inc()
        return keys

    async def _get(self, uri: str) -> bytes:
        """The answer's body: a 200, uncompressed, MAX_JWKS_BYTES at most."""
        import httpx  # only where a client publishes its keys: auth's memory stays as it was

        if self._http is None:  # no proxy from the environment: straight to the client
            self._http = httpx.AsyncClient(
                timeout=FETCH_SECONDS,
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            )
        async with self._http.stream("GET", uri) as answer:
            if answer.status_code != 200:
                raise ValueError(f"HTTP {answer.status_code}")
            if answer.headers.get("content-encoding", "identity").lower() != "identity":
                raise ValueError("a compressed answer")  # its size would be unknown
            body = bytearray()
            async for chunk in answer.aiter_raw():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"more than {MAX_JWKS_BYTES} bytes")
        return bytes(body)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _fits(keys: dict[str | None, ClientKey], kid: object) -> bool:
    """Whether `keys` may hold the one an assertion's `kid` names (none named: any; a
    single key without a kid: that one, as `_signed_by_one` takes it)."""
    return not isinstance(kid, str) or kid in keys or list(keys) == [None]


async def spend(
    sessions: async_sessionmaker[AsyncSession], client_id: str, jti: str, expires: int
) -> None:
    """Remember an assertion's `jti` until it expires; ClientRefused where it was seen
    before (a replay, here or at another instance)."""
    row = ClientAssertion(
        client_id=client_id,
        jti_hash=hashlib.sha256(f"{client_id} {jti}".encode()).hexdigest(),
        expires_at=datetime.fromtimestamp(expires + LEEWAY, UTC),
    )
    try:
        async with sessions.begin() as session:
            session.add(row)
    except IntegrityError as exc:
        raise ClientRefused from exc
