"""DPoP proofs (RFC 9449): a client's key bound to its tokens, checked wherever they go.

A client that holds a key pair signs a short JWT, the proof, for each request it makes
with a token (`DPoP:` header): the method and URL it is for (`htm`, `htu`), when (`iat`),
a unique `jti`, and for a resource, the hash of the access token it sends (`ath`). Its
public key rides in the proof's header (`jwk`). Auth binds the tokens it issues to that
key's RFC 7638 thumbprint (`cnf.jkt`), and a service takes a bound token only with a
fresh proof signed by the same key: a token copied from a log, a proxy or a browser's
storage is worth nothing without the private key, which never leaves the client.

Checked here, the same for auth's token endpoint and every service (common/bearer.py):
only asymmetric algorithms, a public key alone in the header, a signature by it, the
method and URL of this request, an `iat` within the last MAX_AGE seconds (SKEW ahead for
clocks), and a `jti` not seen before here (`SeenProofs`, one process's memory, and
where a service's processes share one, `new_everywhere`). Whatever a
proof holds, a check that fails is InvalidProof, never another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from common.jwt import unverified_header

HEADER = "dpop"
TYPE = "dpop+jwt"
SCHEME = "DPoP"
# What a proof may be signed with (discovery's dpop_signing_alg_values_supported), the
# kind of key each takes, and the curve each elliptic one needs.
ALGORITHMS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
KINDS = {"ES256": "EC", "ES384": "EC", "PS256": "RSA", "RS256": "RSA", "EdDSA": "OKP"}
CURVES = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
# RSA keys as clients make them (WebCrypto's and every library's default exponent): a
# longer modulus or a larger exponent would only make each check cost more.
RSA_BITS = range(2048, 4097)
RSA_EXPONENT = 65537
MAX_AGE = 60  # seconds a proof is good for after its `iat`
SKEW = 10  # seconds a client's clock may be ahead
KEPT = MAX_AGE + SKEW + 1  # seconds a proof is remembered once taken: past its own life
# The same in a memory several processes share (SharedProofs), whose clocks may differ
# by up to SKEW as well.
SHARED_KEPT = KEPT + SKEW
MAX_PROOF = 8192  # characters
MAX_JTI = 256
# The members of each kind of key its RFC 7638 thumbprint is taken over.
THUMBPRINTED = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Proofs remembered per process (SeenProofs), each for about a minute: beyond what one
# process checks in that time. Past it, new proofs are refused until old ones expire.
REMEMBERED = 200_000
# Clients' public keys kept built, by algorithm and thumbprint, once a proof by each
# verified: a client signs every request with one key.
KEYS_KEPT = 1024
_keys: dict[tuple[str, str], Any] = {}


class InvalidProof(Exception):
    """The DPoP proof is missing, malformed, not for this request, stale or replayed."""


@dataclass(frozen=True)
class Proof:
    jkt: str  # the thumbprint of the key that signed it: what a token is bound to
    jti: str
    iat: float


# Where a service's instances share a memory of proofs (auth's, in Redis): whether a
# proof is new to all of them, which then keep it SHARED_KEPT seconds.
SharedProofs = Callable[[Proof], Awaitable[bool]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: the SHA-256 of the key's required members, as canonical JSON."""
    kty = jwk.get("kty")
    members = THUMBPRINTED.get(kty) if isinstance(kty, str) else None
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidProof("the proof's jwk is not an RSA, EC or OKP public key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def token_hash(access_token: str) -> str:
    """`ath`: the access token's SHA-256, base64url (RFC 9449 §4.2)."""
    return _b64(hashlib.sha256(access_token.encode()).digest())


def same_url(a: str, b: str) -> bool:
    """Whether two URLs name one resource, as §4.3 compares `htu`: without query and
    fragment, the scheme and host without case, a default port the same as none, and the
    path with its percent-escapes decoded."""

    def normal(url: str) -> tuple[str, str, int | None, str]:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidProof("htu is not a URL") from exc
        scheme = parts.scheme.lower()
        path = unquote(parts.path) or "/"
        return scheme, (parts.hostname or ""), port or DEFAULT_PORTS.get(scheme), path

    return normal(a) == normal(b)


def verify_proof(
    proof: str,
    method: str,
    urls: tuple[str, ...],
    *,
    access_token: str | None = None,
    now: float | None = None,
) -> Proof:
    """The checked proof for a `method` request to one of `urls` (and, where the request
    carries one, for `access_token`); InvalidProof otherwise. Whether it was seen before
    is `SeenProofs`'."""
    if not proof or len(proof) > MAX_PROOF:
        raise InvalidProof("the DPoP header is empty or too long")
    try:
        header = unverified_header(proof)
    except jwt.PyJWTError as exc:
        raise InvalidProof("the proof is not a JWT") from exc
    if not isinstance(header.get("typ"), str) or header["typ"].lower() != TYPE:
        raise InvalidProof(f"the proof's typ is not {TYPE}")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidProof(f"the proof is signed with {', '.join(ALGORITHMS)} alone")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or PRIVATE_MEMBERS & jwk.keys():
        raise InvalidProof("the proof's header has no public jwk")
    jkt = thumbprint(jwk)
    if jwk["kty"] != KINDS[alg] or jwk.get("crv", CURVES.get(alg)) != CURVES.get(alg):
        raise InvalidProof(f"{alg} takes another kind of key, or another curve")
    try:
        key = _keys.get((alg, jkt)) or _public_key(jwk, alg)
        claims: dict[str, Any] = jwt.decode(
            proof,
            key,
            algorithms=[alg],
            options={
                "require": ["jti", "htm", "htu", "iat"],
                "verify_aud": False,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidProof("the proof's signature or key is not good") from exc
    if (alg, jkt) not in _keys:
        if len(_keys) >= KEYS_KEPT:
            del _keys[next(iter(_keys))]  # the oldest
        _keys[alg, jkt] = key
    try:
        _check_claims(claims, method, urls, access_token, time.time() if now is None else now)
    except (ValueError, TypeError, OverflowError) as exc:  # what no rule foresaw
        raise InvalidProof("the proof's claims cannot be read") from exc
    return Proof(jkt, claims["jti"], float(claims["iat"]))


def _public_key(jwk: dict[str, Any], alg: str) -> Any:
    """The key a proof's `jwk` describes, for `alg`; InvalidProof for an RSA key out of
    bounds, PyJWT's errors for one it cannot build."""
    key = jwt.PyJWK(jwk, algorithm=alg).key
    if isinstance(key, RSAPublicKey) and (
        key.key_size not in RSA_BITS or key.public_numbers().e != RSA_EXPONENT
    ):
        raise InvalidProof("an RSA key has 2048 to 4096 bits, and the exponent 65537")
    return key


def _check_claims(
    claims: dict[str, Any],
    method: str,
    urls: tuple[str, ...],
    access_token: str | None,
    now: float,
) -> None:
    jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise InvalidProof("the proof's jti is not a string of up to 256 characters")
    try:
        jti.encode()  # kept by its digest where processes share a memory (shared_key)
    except UnicodeEncodeError as exc:
        raise InvalidProof("the proof's jti is not text (a lone surrogate)") from exc
    if htm != method:
        raise InvalidProof(f"the proof is not for {method} (htm)")
    if not isinstance(htu, str) or not any(same_url(htu, url) for url in urls):
        raise InvalidProof("the proof is not for this URL (htu)")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise InvalidProof("the proof's iat is not a time")
    if not now - MAX_AGE <= iat <= now + SKEW:
        raise InvalidProof(f"the proof was not made in the last {MAX_AGE} seconds (iat)")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), token_hash(access_token).encode()
        ):
            raise InvalidProof("the proof is not for this access token (ath)")


class SeenProofs:
    """The proofs this process took, each until it is too old to be taken anyway: one
    presented again is a replay (RFC 9449 §11.1). Several instances each keep their own,
    so one proof may be taken once by each within MAX_AGE seconds, unless they also share
    one (`SharedProofs`: auth's, in Redis; README, Known limits).

    Kept by a 64-bit hash of key and `jti` (a collision refuses one good proof, about
    never), each until MAX_AGE + SKEW after it was taken (never before the proof itself
    expires), so in the order they expire, and the expired ones go from the front. At
    `remembered` live ones, new proofs are refused rather than old ones forgotten: a
    flood may delay clients, never let a replay through."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._until: OrderedDict[int, float] = OrderedDict()
        self._remembered = remembered

    def remember(self, proof: Proof, now: float | None = None) -> None:
        """Take `proof` if it is new here, and remember it; InvalidProof otherwise."""
        now = time.time() if now is None else now
        until = self._until
        while until:
            oldest, when = next(iter(until.items()))
            if when > now:
                break
            del until[oldest]
        key = hash((proof.jkt, proof.jti))
        if key in until:
            raise InvalidProof("this proof was used before")
        if len(until) >= self._remembered:
            raise InvalidProof("too many proofs here in the last minute: try again shortly")
        until[key] = now + KEPT


def shared_key(proof: Proof) -> str:
    """What a memory shared by several processes keeps of `proof` (SharedProofs): a
    digest of its key's thumbprint and its `jti`, never the client's own values."""
    return hashlib.sha256(f"{proof.jkt}.{proof.jti}".encode()).hexdigest()[:32]


async def new_everywhere(proof: Proof, shared: SharedProofs | None) -> None:
    """InvalidProof where the memory this process shares with others (None: it shares
    none) saw `proof` already: taken by another instance, or another worker."""
    if shared is not None and not await shared(proof):
        raise InvalidProof("this proof was used before")


def held(bound: str | None, shown: str | None) -> bool:
    """Whether a request whose proof is by the key of thumbprint `shown` (None: it sent
    none) may use what is bound to the key `bound` (None: bound to no key). Compared in
    constant time."""
    if bound is None:
        return True
    return shown is not None and hmac.compare_digest(bound.encode(), shown.encode())


def token_type(jkt: str | None) -> str:
    """What a token bound to the key `jkt` (None: to none) is, as `token_type` says."""
    return "Bearer" if jkt is None else SCHEME


def checked(
    proofs: list[str],
    method: str,
    urls: tuple[str, ...],
    seen: SeenProofs,
    access_token: str | None = None,
    jkt: str | None = None,
) -> Proof:
    """The one proof of a request's DPoP headers, checked (by the key of thumbprint `jkt`
    where given) and new, and remembered; InvalidProof else."""
    if len(proofs) != 1:
        raise InvalidProof("send one DPoP header")
    proof = verify_proof(proofs[0], method, urls, access_token=access_token)
    if not held(jkt, proof.jkt):
        raise InvalidProof("the proof is signed by another key than the token is bound to")
    seen.remember(proof)
    return proof


def challenge(error: str, description: str) -> str:
    """A WWW-Authenticate for the DPoP scheme (RFC 9449 §7.1)."""
    described = description.replace('"', "'")
    algs = " ".join(ALGORITHMS)
    return f'{SCHEME} error="{error}", error_description="{described}", algs="{algs}"'
