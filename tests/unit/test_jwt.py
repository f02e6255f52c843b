from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

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
