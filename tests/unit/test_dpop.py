"""DPoP proofs' rules (common/dpop.py): what a proof must say and be signed with, and
that one is taken once. Over HTTP, at auth's token endpoint and at films and auth as
resources: tests/integration/test_dpop.py."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.warnings import InsecureKeyLengthWarning
from starlette.requests import Request

from common import dpop
from common.bearer import resource_url
from tests.dpop_keys import ProofKey

URL = "https://api.example.test/v1/films/7"
TOKEN = "header.claims.signature"
ES256 = ProofKey()


def check(proof: str, *, now: float | None = None, token: str | None = TOKEN) -> dpop.Proof:
    return dpop.verify_proof(proof, "GET", (URL,), access_token=token, now=now)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_good_proof_gives_its_keys_thumbprint(alg: str) -> None:
    key = ES256 if alg == "ES256" else ProofKey(alg)
    proof = check(key.proof("GET", URL, TOKEN))
    assert proof.jkt == key.jkt
    assert abs(proof.iat - time.time()) < 5


def test_the_thumbprint_is_rfc_7638s() -> None:
    """RFC 7638 §3.1's example key and its thumbprint."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
        "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKn"
        "qDKgw"
    )
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert dpop.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def forged(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT with any header, signed by nobody."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.c2ln"


def short_rsa_proof() -> str:
    with warnings.catch_warnings():  # PyJWT's, signing with a short key: the point here
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return ProofKey("RS256", rsa_bits=1024).proof("GET", URL, TOKEN)


RSA_JWK = ProofKey("RS256").jwk
OTHER = ec.generate_private_key(ec.SECP256R1())
PRIVATE_JWK = ECAlgorithm.to_jwk(OTHER, as_dict=True)


@pytest.mark.parametrize(
    "proof",
    [
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, header={"typ": "JWT"}), id="typ JWT"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, header={"typ": None}), id="no typ"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, header={"jwk": None}), id="no jwk"),
        pytest.param(
            lambda: ES256.proof("GET", URL, TOKEN, header={"jwk": PRIVATE_JWK}),
            id="a private jwk",
        ),
        pytest.param(
            lambda: ES256.proof(
                "GET",
                URL,
                TOKEN,
                header={"jwk": ECAlgorithm.to_jwk(OTHER.public_key(), as_dict=True)},
            ),
            id="signed by another key than its jwk",
        ),
        pytest.param(
            lambda: jwt.encode(
                {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())},
                "a shared secret of thirty-two bytes!",
                algorithm="HS256",
                headers={"typ": "dpop+jwt", "jwk": ES256.jwk},
            ),
            id="HS256",
        ),
        pytest.param(
            lambda: forged(
                {"typ": "dpop+jwt", "alg": "none", "jwk": ES256.jwk},
                {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())},
            ),
            id="alg none",
        ),
        pytest.param(short_rsa_proof, id="RSA 1024"),
        pytest.param(
            lambda: forged(
                {"typ": "dpop+jwt", "alg": "ES384", "jwk": ES256.jwk},
                {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())},
            ),
            id="ES384 on P-256",
        ),
        pytest.param(lambda: ES256.proof("POST", URL, TOKEN), id="another method"),
        pytest.param(lambda: ES256.proof("get", URL, TOKEN), id="the method's case"),
        pytest.param(lambda: ES256.proof("GET", URL + "8", TOKEN), id="another path"),
        pytest.param(
            lambda: ES256.proof("GET", URL.replace("api.", "www."), TOKEN), id="another host"
        ),
        pytest.param(
            lambda: ES256.proof("GET", URL.replace("https", "http"), TOKEN), id="another scheme"
        ),
        pytest.param(lambda: ES256.proof("GET", "not a url:x", TOKEN), id="no URL"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, htu=7), id="htu a number"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, jti=None), id="no jti"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, jti=""), id="empty jti"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, jti="j" * 257), id="long jti"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, jti="\ud800"), id="jti a surrogate"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, iat=None), id="no iat"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, iat="now"), id="iat a string"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, iat=True), id="iat true"),
        pytest.param(
            lambda: ES256.proof("GET", URL, TOKEN, iat=int(time.time()) - dpop.MAX_AGE - 5),
            id="too old",
        ),
        pytest.param(
            lambda: ES256.proof("GET", URL, TOKEN, iat=int(time.time()) + dpop.SKEW + 5),
            id="from the future",
        ),
        pytest.param(lambda: ES256.proof("GET", URL), id="no ath"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN + "x"), id="another token's ath"),
        pytest.param(
            lambda: forged({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": ["EC"]}}, {}),
            id="kty a list",
        ),
        pytest.param(
            lambda: forged(
                {
                    "typ": "dpop+jwt",
                    "alg": "ES256",
                    "jwk": {"kty": "RSA", "n": "x", "e": "AQAB", "crv": ["P-256"]},
                },
                {},
            ),
            id="an RSA key for ES256, crv a list",
        ),
        pytest.param(
            lambda: forged(
                {"typ": "dpop+jwt", "alg": "ES256", "jwk": RSA_JWK},
                {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())},
            ),
            id="an RSA key for ES256",
        ),
        pytest.param(lambda: ES256.proof("GET", "http://[::1/x", TOKEN), id="htu unparseable"),
        pytest.param(lambda: ES256.proof("GET", "http://a.test:99999/", TOKEN), id="htu port"),
        pytest.param(lambda: ES256.proof("GET", URL, TOKEN, iat=10**400), id="iat huge"),
        pytest.param(lambda: "not a jwt", id="not a JWT"),
        pytest.param(lambda: "W1tb" * 1250 + ".e30.c2ln", id="header nested 3750 deep"),
        pytest.param(lambda: "WzFd.e30.c2ln", id="header a list"),
        pytest.param(lambda: "_w.e30.c2ln", id="header not UTF-8"),
        pytest.param(lambda: "e31.e30.c2ln", id="header not canonical base64"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "a" * (dpop.MAX_PROOF + 1), id="too long"),
    ],
)
def test_a_proof_is_refused(proof: Any) -> None:
    with pytest.raises(dpop.InvalidProof):
        check(proof())


def test_a_key_kept_built_still_checks_every_signature() -> None:
    """Keys are kept built once a proof by each verified (dpop._keys): a later proof
    naming that key is still checked against it, whoever signed it."""
    key = ProofKey()
    assert check(key.proof("GET", URL, TOKEN)).jkt == key.jkt
    assert ("ES256", key.jkt) in dpop._keys
    impostor = ProofKey()
    impostor.jwk = key.jwk  # the known key in its header, signed by another
    with pytest.raises(dpop.InvalidProof, match="signature"):
        check(impostor.proof("GET", URL, TOKEN))
    good = key.proof("GET", URL, TOKEN)
    head, claims, signature = good.split(".")
    with pytest.raises(dpop.InvalidProof, match="signature"):
        check(f"{head}.{claims}.{signature[:-4]}AAAA")
    assert check(good).jkt == key.jkt


def test_rsa_keys_are_as_clients_make_them() -> None:
    """Nothing dearer to check than a client's usual key: a modulus of up to 4096 bits,
    the exponent 65537."""
    assert check(ProofKey("RS256", rsa_bits=4096).proof("GET", URL, TOKEN)).jkt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in (ProofKey("RS256", rsa_bits=4160), ProofKey("RS256", exponent=3)):
            with pytest.raises(dpop.InvalidProof, match="65537"):
                check(key.proof("GET", URL, TOKEN))


def test_the_url_is_compared_without_query_case_or_default_port() -> None:
    for named in (
        URL + "?page=2#top",
        "https://api.example.test/v1/%66ilms/7",
        "HTTPS://API.EXAMPLE.TEST/v1/films/7",
        "https://api.example.test:443/v1/films/7",
    ):
        assert check(ES256.proof("GET", named, TOKEN)).jkt == ES256.jkt
    assert dpop.same_url("http://a.test/", "http://a.test:80")
    assert not dpop.same_url("http://a.test:8080/", "http://a.test/")


def test_at_the_token_endpoint_no_ath_is_needed() -> None:
    assert check(ES256.proof("GET", URL), token=None).jkt == ES256.jkt


def test_freshness_is_judged_by_the_servers_clock() -> None:
    proof = ES256.proof("GET", URL, TOKEN, iat=1_000_000)
    assert check(proof, now=1_000_000 + dpop.MAX_AGE).iat == 1_000_000
    with pytest.raises(dpop.InvalidProof):
        check(proof, now=1_000_000 + dpop.MAX_AGE + 1)
    assert check(proof, now=1_000_000 - dpop.SKEW).iat == 1_000_000


def test_a_proof_is_taken_once_while_it_could_be_taken() -> None:
    seen = dpop.SeenProofs()
    proof = dpop.Proof("jkt", "jti-1", 1_000_000)
    seen.remember(proof, now=1_000_000)
    with pytest.raises(dpop.InvalidProof, match="used before"):
        seen.remember(proof, now=1_000_000 + dpop.MAX_AGE)
    seen.remember(dpop.Proof("other-key", "jti-1", 1_000_000), now=1_000_000)
    # Once too old to pass verify_proof, it need not be remembered.
    seen.remember(proof, now=1_000_000 + dpop.MAX_AGE + dpop.SKEW + 2)


def test_a_full_memory_refuses_new_proofs_and_forgets_none_still_live() -> None:
    """A flood delays clients until its proofs expire; it never lets a replay through."""
    seen = dpop.SeenProofs(remembered=10)
    for i in range(10):
        seen.remember(dpop.Proof("k", f"jti-{i}", 1_000_000), now=1_000_000)
    with pytest.raises(dpop.InvalidProof, match="too many"):
        seen.remember(dpop.Proof("k", "jti-new", 1_000_000), now=1_000_000)
    with pytest.raises(dpop.InvalidProof, match="used before"):
        seen.remember(dpop.Proof("k", "jti-0", 1_000_000), now=1_000_000 + dpop.MAX_AGE)
    # Expired, they go, from the oldest.
    later = 1_000_000 + dpop.MAX_AGE + dpop.SKEW + 2
    seen.remember(dpop.Proof("k", "jti-new", later), now=later)
    assert len(seen._until) == 1


def test_checked_wants_one_header_and_a_new_proof() -> None:
    seen = dpop.SeenProofs()
    proof = ES256.proof("GET", URL, TOKEN)
    with pytest.raises(dpop.InvalidProof, match="one DPoP header"):
        dpop.checked([proof, proof], "GET", (URL,), seen, TOKEN)
    with pytest.raises(dpop.InvalidProof, match="one DPoP header"):
        dpop.checked([], "GET", (URL,), seen, TOKEN)
    assert dpop.checked([proof], "GET", (URL,), seen, TOKEN).jkt == ES256.jkt
    with pytest.raises(dpop.InvalidProof, match="used before"):
        dpop.checked([proof], "GET", (URL,), seen, TOKEN)


def request_to(path: str, host: str, public_url: str | None) -> Request:
    class State:
        pass

    app = type("App", (), {"state": State()})()
    app.state.public_url = public_url
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": b"q=1",
        "headers": [(b"host", host.encode())],
        "server": ("10.0.0.5", 8002),
        "root_path": "",
        "app": app,
    }
    return Request(scope)


def test_a_service_names_its_public_url_where_it_has_one() -> None:
    """Behind a gateway that ends TLS the service sees http: FILMS_PUBLIC_URL says what
    the client called."""
    assert resource_url(request_to("/v1/films/7", "films:8002", None)) == (
        "http://films:8002/v1/films/7"
    )
    assert resource_url(request_to("/v1/films/7", "films:8002", "https://api.example.test/")) == (
        "https://api.example.test/v1/films/7"
    )


def test_the_challenge_names_the_algorithms_and_quotes_nothing_it_should_not() -> None:
    challenge = dpop.challenge("invalid_dpop_proof", 'say "no"')
    assert challenge.startswith('DPoP error="invalid_dpop_proof"')
    assert "say 'no'" in challenge and 'algs="ES256 ES384 PS256 RS256 EdDSA"' in challenge
