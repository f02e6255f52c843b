from __future__ import annotations

import base64
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from auth_service.config import AuthSettings
from auth_service.keys import KeyRing
from auth_service.tokens import AccessTokenIssuer
from common.jwt import InvalidToken, TokenVerifier, public_jwk, unverified_header

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_kid_is_a_stable_rfc7638_thumbprint() -> None:
    a, b = public_jwk(KEY.public_key()), public_jwk(KEY.public_key())
    assert a == b
    assert a["kid"] != public_jwk(rsa.generate_private_key(65537, 2048).public_key())["kid"]
    assert set(a) == {"kty", "n", "e", "kid", "use", "alg"}


def test_the_header_is_read_as_pyjwt_reads_it() -> None:
    """unverified_header reads the first segment alone, as strictly as PyJWT reads the
    whole token: the same header for a good one, DecodeError where PyJWT refuses."""
    token = jwt.encode({"sub": "s"}, KEY, algorithm="RS256", headers={"kid": "k", "x": [1]})
    assert unverified_header(token) == jwt.get_unverified_header(token)
    assert unverified_header(token.split(".")[0]) == jwt.get_unverified_header(token)

    def segment(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    rest = ".e30.c2ln"
    for hostile in (
        "",
        "not a jwt",
        segment(b'{"alg":"RS256"}') + "=" + rest,  # padded
        segment(b'{"alg":"RS256"}') + "!" + rest,
        "e31" + rest,  # not canonical: {} with bits left over
        "e" + rest,  # one character: no byte
        segment(b"[1]") + rest,
        segment(b'"alg"') + rest,
        segment(b"\xff\xfe") + rest,
        segment(b"[" * 5000) + rest,
        segment(b'{"kid":["k"]}') + rest,
        segment(b'{"kid":7}') + rest,
    ):
        with pytest.raises(jwt.DecodeError):
            unverified_header(hostile)
        with pytest.raises(jwt.PyJWTError):
            jwt.get_unverified_header(hostile)
    # Padding PyJWT forgives (some issuers add it); RFC 7515 has none, nor has auth.
    padded = segment(b'{"alg":"RS25"}') + "=" + rest
    assert jwt.get_unverified_header(padded) == {"alg": "RS25"}
    with pytest.raises(jwt.DecodeError):
        unverified_header(padded)


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


@pytest.mark.parametrize(
    ("typ", "as_access", "as_hint"),
    [
        ("at+jwt", True, False),  # RFC 9068, with AUTH_ACCESS_TOKEN_TYPE=at+jwt
        ("application/AT+JWT", True, False),  # a media type, compared without case
        ("JWT", True, True),  # PyJWT's default: access tokens by default, and ID tokens
        ("application/jwt", True, True),
        (None, True, True),  # none: the contract names only `kid`
        ("logout+jwt", False, False),  # a logout token is neither
        ("secevent+jwt", False, False),
        (["at+jwt"], False, False),  # not even a string: refused, never a 500
        (7, False, False),
    ],
)
def test_a_token_is_told_by_its_type(typ: object, as_access: bool, as_hint: bool) -> None:
    verifier = TokenVerifier.from_public_key(KEY.public_key(), issuer="iss", audience="api")
    now = int(time.time())
    claims = {"iss": "iss", "sub": "s", "aud": "api", "iat": now, "exp": now + 60, "jti": "j"}
    headers: dict[str, object] = {"kid": public_jwk(KEY.public_key())["kid"], "typ": typ}
    token = jwt.encode(claims, KEY, algorithm="RS256", headers=headers)
    assert jwt.get_unverified_header(token).get("typ") == typ
    if as_access:
        assert verifier.verify(token)["sub"] == "s"
    else:
        with pytest.raises(InvalidToken, match="not an access token"):
            verifier.verify(token)
    if as_hint:  # an ID token handed back names a sign-in
        assert verifier.signed(token)["sub"] == "s"
    else:
        with pytest.raises(InvalidToken, match="not an ID token"):
            verifier.signed(token)


@pytest.mark.parametrize(
    ("typ", "taken"),
    [("at+jwt", True), ("application/at+jwt", True), ("JWT", False), (None, False)],
)
def test_a_verifier_may_require_rfc_9068s_type(typ: str | None, taken: bool) -> None:
    """FILMS_REQUIRE_AT_JWT, MAILER_REQUIRE_AT_JWT: only at+jwt passes as an access token;
    an ID token handed back as a hint is checked as before."""
    verifier = TokenVerifier.from_public_key(
        KEY.public_key(), issuer="iss", audience="api", require_at_jwt=True
    )
    now = int(time.time())
    claims = {"iss": "iss", "sub": "s", "aud": "api", "iat": now, "exp": now + 60, "jti": "j"}
    headers: dict[str, object] = {"kid": public_jwk(KEY.public_key())["kid"], "typ": typ}
    token = jwt.encode(claims, KEY, algorithm="RS256", headers=headers)
    if taken:
        assert verifier.verify(token)["sub"] == "s"
    else:
        with pytest.raises(InvalidToken, match="not an access token"):
            verifier.verify(token)
        assert verifier.signed(token)["sub"] == "s"


def test_access_tokens_are_plain_jwts_unless_told_otherwise(settings: AuthSettings) -> None:
    """AUTH_ACCESS_TOKEN_TYPE: JWT by default, which every JWT library takes; at+jwt for
    resource servers that check RFC 9068's type."""
    for setting, typ in (("JWT", "JWT"), ("at+jwt", "at+jwt")):
        configured = settings.model_copy(update={"access_token_type": setting})
        issuer = AccessTokenIssuer(KeyRing(configured), configured)
        token = issuer.issue(uuid.uuid4(), [], uuid.uuid4(), ("pwd",))
        assert jwt.get_unverified_header(token)["typ"] == typ
        assert jwt.get_unverified_header(issuer.issue_to_client("svc", "films"))["typ"] == typ
        id_token = issuer.sign({"aud": "app", "sub": "s"})
        assert jwt.get_unverified_header(id_token)["typ"] == "JWT"  # never an access token's


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


def _signed(**overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": "iss", "sub": "s", "aud": "api", "iat": now, "exp": now + 60, "jti": "j"}
    kid = public_jwk(KEY.public_key())["kid"]
    return jwt.encode({**claims, **overrides}, KEY, algorithm="RS256", headers={"kid": kid})


def test_a_remembered_token_still_expires() -> None:
    now = [time.time()]
    verifier = TokenVerifier(
        {public_jwk(KEY.public_key())["kid"]: KEY.public_key()},
        issuer="iss",
        audience="api",
        clock=lambda: now[0],
    )
    token = _signed(exp=int(now[0]) + 60)
    assert verifier.verify(token)["sub"] == "s"
    now[0] += 60 + 4  # within the leeway: still good, from memory
    assert verifier.verify(token)["sub"] == "s"
    now[0] += 2
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_remembering_changes_nothing_a_caller_sees() -> None:
    verifier = TokenVerifier.from_public_key(KEY.public_key(), issuer="iss", audience="api")
    token = _signed(roles=["admin"])
    first = verifier.verify(token)
    first["sub"] = "someone else"  # a caller's edit is not remembered
    first["roles"].append("superuser")
    assert verifier.verify(token)["sub"] == "s"
    assert verifier.verify(token)["roles"] == ["admin"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidToken):  # another string: a full check, which fails
        verifier.verify(tampered)
    with pytest.raises(InvalidToken):  # a failure is never remembered as a success
        verifier.verify(_signed(aud="other"))
