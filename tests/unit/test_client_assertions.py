"""private_key_jwt's rules (client_assertions.py): which public keys a client may register,
and which assertions signed with them are taken. Over HTTP, with the replay store and
Authlib as the client: tests/integration/test_private_key_jwt.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from auth_service.client_assertions import (
    MalformedAssertion,
    asserted_client,
    signing_keys,
    verified,
)
from auth_service.config import AuthSettings, OAuthClient
from auth_service.errors import ClientRefused

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_JWK = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True) | {"kid": "rsa"}
EC_JWK = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True) | {"kid": "ec"}
ED_JWK = OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True) | {"kid": "ed"}
KEYS = signing_keys({"keys": [RSA_JWK, EC_JWK, ED_JWK]})
TOKEN_URL = "https://id.example/v1/auth/token"
AUDIENCES = frozenset({"https://id.example", TOKEN_URL})


def claims(**overrides: object) -> dict[str, object]:
    """A good assertion's claims; an override of None leaves that claim out."""
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "signer",
        "sub": "signer",
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 300,
        "jti": f"jti-{time.monotonic_ns()}",
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def signed(
    key: Any = RSA_KEY,
    algorithm: str = "RS256",
    kid: str | None = "rsa",
    typ: str | None = None,
    **over: object,
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    if typ is not None:
        headers["typ"] = typ
    return jwt.encode(claims(**over), key, algorithm=algorithm, headers=headers)


def part(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned(header: dict[str, object], body: dict[str, object]) -> str:
    return f"{part(header)}.{part(body)}."


def hmac_signed() -> str:
    """The old confusion: HS256, keyed with the client's public key, which anyone has."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{part({'alg': 'HS256', 'kid': 'rsa'})}.{part(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def rs256_signed(header: dict[str, object]) -> str:
    """Signed with the client's RSA key, under a header no library would write."""
    signing_input = f"{part(header)}.{part(claims())}"
    signature = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def tampered() -> str:
    header, _, signature = signed().split(".")
    return f"{header}.{part(claims(sub='other'))}.{signature}"


@pytest.mark.parametrize(
    ("key", "algorithm", "kid"),
    [
        (RSA_KEY, "RS256", "rsa"),
        (RSA_KEY, "PS256", "rsa"),  # an RSA key with no `alg` signs with either
        (RSA_KEY, "RS512", "rsa"),
        (EC_KEY, "ES256", "ec"),
        (ED_KEY, "EdDSA", "ed"),
    ],
)
def test_an_assertion_signed_with_one_of_the_clients_keys_is_taken(
    key: Any, algorithm: str, kid: str
) -> None:
    assertion = signed(key, algorithm, kid)
    assert asserted_client(assertion) == "signer"
    jti, expires = verified(KEYS, "signer", assertion, AUDIENCES)
    assert jti.startswith("jti-") and expires > time.time()


def test_the_audience_may_be_the_issuer_and_one_value_in_a_list() -> None:
    for audience in ("https://id.example", ["https://id.example"], [TOKEN_URL]):
        verified(KEYS, "signer", signed(aud=audience), AUDIENCES)


def test_without_a_kid_any_of_its_keys_may_have_signed() -> None:
    for key, algorithm in ((RSA_KEY, "PS256"), (EC_KEY, "ES256"), (ED_KEY, "EdDSA")):
        verified(KEYS, "signer", signed(key, algorithm, kid=None), AUDIENCES)
    with pytest.raises(ClientRefused):
        verified(KEYS, "signer", signed(OTHER_RSA_KEY, kid=None), AUDIENCES)


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", "client-authentication+jwt", "application/client-authentication+jwt"]
)
def test_an_assertion_may_say_what_it_is(typ: str) -> None:
    verified(KEYS, "signer", signed(typ=typ), AUDIENCES)


def test_a_client_with_one_key_needs_no_kid() -> None:
    one = signing_keys({"keys": [{k: v for k, v in EC_JWK.items() if k != "kid"}]})
    verified(one, "signer", signed(EC_KEY, "ES256", kid=None), AUDIENCES)
    verified(one, "signer", signed(EC_KEY, "ES256", kid="anything"), AUDIENCES)
    named = signing_keys({"keys": [EC_JWK]})
    verified(named, "signer", signed(EC_KEY, "ES256", kid=None), AUDIENCES)


NOW = int(time.time())
REFUSED = {
    "expired": signed(exp=NOW - 120, iat=NOW - 400),
    "expires more than an hour ahead": signed(exp=NOW + 3 * 3600),
    "not yet valid": signed(nbf=NOW + 600),
    "issued in the future": signed(iat=NOW + 600),
    "no exp": signed(exp=None),
    "no jti": signed(jti=None),
    "a jti that is no string": signed(jti=7),
    "an empty jti": signed(jti=""),
    "no aud": signed(aud=None),
    "another server's aud": signed(aud="https://evil.example/token"),
    "two audiences": signed(aud=[TOKEN_URL, "https://evil.example/token"]),
    "an aud that is an object": signed(aud={"x": TOKEN_URL}),
    "no sub": signed(sub=None),
    "another client's sub": signed(sub="other"),
    "another client's iss": signed(iss="other"),
    "an exp that is a string": signed(exp=str(NOW + 300)),
    "a kid it does not have": signed(kid="nope"),
    "a kid that is no string": rs256_signed({"alg": "RS256", "kid": ["rsa"]}),
    "another key, its kid": signed(OTHER_RSA_KEY),
    "the EC key's kid, signed by RSA": signed(RSA_KEY, "RS256", "ec"),
    "the RSA key's kid, an EC algorithm": signed(EC_KEY, "ES256", "rsa"),
    "alg none": unsigned({"alg": "none", "kid": "rsa"}, claims()),
    "a DPoP proof's type": signed(typ="dpop+jwt"),
    "an access token's type": signed(typ="at+jwt"),
    "a request object's type": signed(typ="oauth-authz-req+jwt"),
    "a type that is no string": rs256_signed({"alg": "RS256", "kid": "rsa", "typ": 1}),
    "its own key in the header, no kid": jwt.encode(
        claims(),
        OTHER_RSA_KEY,
        algorithm="RS256",
        headers={"jwk": RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key(), as_dict=True)},
    ),
    "a jku to fetch keys from": jwt.encode(
        claims(), OTHER_RSA_KEY, algorithm="RS256", headers={"jku": "https://evil.example/k"}
    ),
    "HS256 with the public key as its secret": hmac_signed(),
    "another body under a good signature": tampered(),
}


@pytest.mark.parametrize("why", list(REFUSED))
def test_every_other_assertion_is_refused(why: str) -> None:
    with pytest.raises(ClientRefused):
        verified(KEYS, "signer", REFUSED[why], AUDIENCES)


def test_a_key_registered_for_one_algorithm_signs_with_it_alone() -> None:
    only_rs256 = signing_keys({"keys": [RSA_JWK | {"alg": "RS256"}]})
    verified(only_rs256, "signer", signed(), AUDIENCES)
    with pytest.raises(ClientRefused):
        verified(only_rs256, "signer", signed(algorithm="PS256"), AUDIENCES)


@pytest.mark.parametrize("assertion", ["", "x", "a.b.c", unsigned({"alg": "none"}, {"sub": "x"})])
def test_an_assertion_that_names_no_client_is_malformed(assertion: str) -> None:
    with pytest.raises(MalformedAssertion):
        asserted_client(assertion)


def big_exponent() -> str:
    """An exponent of 2**33 + 1, as a JWK writes it: each verification would be slow."""
    return base64.urlsafe_b64encode((2**33 + 1).to_bytes(5, "big")).rstrip(b"=").decode()


def small_rsa_jwk() -> dict[str, Any]:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    return RSAAlgorithm.to_jwk(small.public_key(), as_dict=True)


def private_jwk() -> dict[str, Any]:
    return RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True)


@pytest.mark.parametrize(
    ("jwks", "said"),
    [
        ({"keys": []}, "1 to 10"),
        ({"keys": [RSA_JWK] * 11}, "1 to 10"),
        ({"keys": [RSA_JWK], "extra": 1}, "1 to 10"),
        ({"keys": RSA_JWK}, "1 to 10"),
        ({"keys": ["x"]}, "a JSON object"),
        ({"keys": [private_jwk()]}, "private or secret key"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "private or secret key"),
        ({"keys": [RSA_JWK | {"use": "enc"}]}, "for signing"),
        ({"keys": [RSA_JWK | {"key_ops": ["encrypt"]}]}, "for signing"),
        ({"keys": [RSA_JWK | {"key_ops": "verify"}]}, "a list of strings"),
        ({"keys": [RSA_JWK | {"key_ops": 5}]}, "a list of strings"),
        ({"keys": [RSA_JWK, RSA_JWK]}, "a kid of its own"),
        ({"keys": [RSA_JWK, {k: v for k, v in EC_JWK.items() if k != "kid"}]}, "a kid of its own"),
        ({"keys": [RSA_JWK | {"kid": 5}]}, "a kid is a string"),
        ({"keys": [RSA_JWK | {"alg": "ES256"}]}, "not one for its key"),
        ({"keys": [RSA_JWK | {"alg": "HS256"}]}, "not one for its key"),
        ({"keys": [EC_JWK | {"crv": "secp256k1"}]}, "EC on P-256"),
        ({"keys": [EC_JWK | {"kty": "OKP"}]}, "EC on P-256"),
        ({"keys": [small_rsa_jwk()]}, "2048 bits"),
        ({"keys": [RSA_JWK | {"e": big_exponent()}]}, "a small exponent"),
        ({"keys": [RSA_JWK | {"n": "!!"}]}, "could not be read"),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}, "could not be read"),
    ],
)
def test_a_client_registers_public_signing_keys_alone(jwks: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        signing_keys(jwks)
    with pytest.raises(ValidationError, match=said):
        OAuthClient(client_id="signer", name="Signer", redirect_uris=[], jwks=jwks, introspect=True)


def test_a_client_with_keys_is_confidential_and_has_no_secret() -> None:
    service = OAuthClient(
        client_id="signer", name="Signer", jwks={"keys": [EC_JWK]}, client_credentials=True
    )
    assert service.confidential and service.secret_sha256 is None
    with pytest.raises(ValidationError, match="one way, secret_sha256, jwks or jwks_uri"):
        OAuthClient(
            client_id="signer",
            name="Signer",
            jwks={"keys": [EC_JWK]},
            secret_sha256="0" * 64,
            introspect=True,
        )


def test_endpoint_urls_as_audiences_come_from_the_public_url_alone() -> None:
    with pytest.raises(ValidationError, match="needs AUTH_PUBLIC_URL"):
        AuthSettings(client_assertion_audience="issuer_and_endpoints")
    allowed = AuthSettings(
        client_assertion_audience="issuer_and_endpoints", public_url="https://id.example"
    )
    assert allowed.client_assertion_audience == "issuer_and_endpoints"
    assert AuthSettings().client_assertion_audience == "issuer"  # RFC 7523bis's


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/jwks.json",  # in the clear, off this machine
        "https://user:pw@app.example/jwks.json",  # the logs would show it
        "https://app.example/jwks.json#x",
        "file:///etc/jwks.json",
    ],
)
def test_a_jwks_uri_is_an_address_auth_may_call(uri: str) -> None:
    with pytest.raises(ValidationError, match="not a JWKS URI"):
        OAuthClient(client_id="signer", name="Signer", jwks_uri=uri, introspect=True)
    fine = "http://127.0.0.1:9/jwks.json"
    assert OAuthClient(client_id="s", name="S", jwks_uri=fine, introspect=True).signs
