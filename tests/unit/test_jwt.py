from __future__ import annotations

import base64
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from common.jwt import InvalidToken, TokenVerifier, public_jwk

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_kid_is_a_stable_rfc7638_thumbprint() -> None:
    a, b = public_jwk(KEY.public_key()), public_jwk(KEY.public_key())
    assert a == b
    assert a["kid"] != public_jwk(rsa.generate_private_key(65537, 2048).public_key())["kid"]
    assert set(a) == {"kty", "n", "e", "kid", "use", "alg"}


def test_the_verifier_accepts_only_what_it_should() -> None:
    verifier = TokenVerifier.from_public_key(KEY.public_key(), issuer="iss", audience="api")
    now = int(time.time())
    claims = {
        "iss": "iss",
        "sub": str(uuid.uuid4()),
        "aud": "api",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
        "roles": ["admin"],
    }
    kid = public_jwk(KEY.public_key())["kid"]
    good = jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": kid})
    assert verifier.verify(good)["roles"] == ["admin"]
    with pytest.raises(InvalidToken):
        verifier.verify(jwt.encode(claims, KEY, algorithm="RS512", headers={"kid": kid}))
    with pytest.raises(InvalidToken):
        verifier.verify(jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "other"}))


def test_kid_is_the_rfc_7638_thumbprint_of_its_own_example() -> None:
    """RFC 7638 §3.1: the example RSA key and the thumbprint the RFC gives for it."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    key = RSAPublicNumbers(65537, modulus).public_key()
    jwk = public_jwk(key)
    assert jwk["n"] == n and jwk["e"] == "AQAB"
    assert jwk["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
