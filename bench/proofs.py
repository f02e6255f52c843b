"""`python -m bench.proofs`: what checking a DPoP proof (common/dpop.py) and an access
token (common/jwt.py) costs, against the bare signature check of the same bytes with the
same key, built beforehand: the floor no parsing can go below. Alternating rounds, on
the service's core; the proofs are signed before each round starts.
"""

from __future__ import annotations

import base64
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jwt

from bench.harness import SERVICE_CORE, key_material
from common import dpop
from common.jwt import TokenVerifier
from tests.dpop_keys import ProofKey
from tests.support import TEST_AUDIENCE, TEST_ISSUER, Minter

PER_ROUND = 500
ROUNDS = 5
URL = "https://api.example.test/v1/films/7"


def signature_check(token: str, key: object) -> Callable[[], object]:
    """The bare check of `token`'s signature with `key`, as PyJWT's algorithm makes it."""
    head_and_claims, _, signature = token.rpartition(".")
    algorithm = jwt.get_algorithm_by_name(jwt.get_unverified_header(token)["alg"])
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    message = head_and_claims.encode()
    return lambda: algorithm.verify(message, key, raw)


def per_item(check: Callable[[str], object], items: list[str]) -> float:
    """µs a call of `check`, over `items`."""
    start = time.perf_counter()
    for item in items:
        check(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def per_call(call: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    minter = Minter(
        key_material(Path(tempfile.mkdtemp(prefix="bench-proofs-"))).private_key_path.parent
    )
    verifier = TokenVerifier.from_public_key(
        minter.private_key.public_key(), issuer=TEST_ISSUER, audience=TEST_AUDIENCE
    )
    token = minter.token()
    rows: dict[str, tuple[list[float], list[float]]] = {}
    keys = {alg: ProofKey(alg) for alg in ("ES256", "EdDSA", "PS256", "RS256")}
    for _ in range(ROUNDS):
        for alg, key in keys.items():
            proofs = [key.proof("GET", URL, token) for _ in range(PER_ROUND)]
            public = jwt.PyJWK(key.jwk, algorithm=alg).key
            bare = signature_check(proofs[0], public)
            checks, floors = rows.setdefault(f"DPoP proof, {alg}", ([], []))
            checks.append(
                per_item(lambda p: dpop.verify_proof(p, "GET", (URL,), access_token=token), proofs)
            )
            floors.append(per_call(bare, PER_ROUND))
        tokens = [minter.token() for _ in range(PER_ROUND)]
        bare = signature_check(tokens[0], minter.private_key.public_key())
        checks, floors = rows.setdefault("access token, RS256 (not yet remembered)", ([], []))
        checks.append(per_item(verifier._verify, tokens))
        floors.append(per_call(bare, PER_ROUND))
    print(f"{'check':44s} {'µs':>7s} {'bare signature µs':>18s} {'ratio':>6s}")
    for name, (checks, floors) in rows.items():
        check, floor = statistics.median(checks), statistics.median(floors)
        print(f"{name:44s} {check:7.0f} {floor:18.0f} {check / floor:5.2f}x")


if __name__ == "__main__":
    os.sched_setaffinity(0, {SERVICE_CORE})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
