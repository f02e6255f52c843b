"""Keys a private_key_jwt client publishes at its jwks_uri (`ClientKeySets`): when they
are fetched, how often at most, and what a fetch that fails or brings something else
leaves in place. The client's server is httpx's MockTransport, the clock a fake one; over
real HTTP: tests/integration/test_private_key_jwt.py."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from auth_service import client_assertions
from auth_service.client_assertions import (
    MAX_JWKS_BYTES,
    MAX_STALE,
    ClientKeySets,
    published_keys,
)

URI = "https://app.example/jwks.json"
OLD = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
NEW = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
PRIVATE = RSAAlgorithm.to_jwk(
    rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
)
GOOD = json.dumps({"keys": [OLD | {"kid": "a"}, NEW | {"kid": "b"}]}).encode()


class Server:
    """The client's server: answers each GET with what `answer` holds, and counts them."""

    def __init__(self, document: Any) -> None:
        self.answer: Any = document
        self.fetches = 0
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # where set, each answer waits for it
        self.asked = asyncio.Event()  # set at each request

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        self.asked.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        status, body, headers = (
            self.answer if isinstance(self.answer, tuple) else (200, self.answer, {})
        )
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_sets(server: Server, clock: Clock, cooldown: float = 30.0) -> ClientKeySets:
    return ClientKeySets(cooldown, clock=clock, transport=httpx.MockTransport(server))


def named(jwk: dict[str, Any], kid: str) -> dict[str, Any]:
    return jwk | {"kid": kid}


async def test_keys_are_fetched_once_then_again_for_a_new_kid_after_the_cooldown() -> None:
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    sets = key_sets(server, clock)
    assert set(await sets.keys("app", URI, "a")) == {"a"}
    assert set(await sets.keys("app", URI, "a")) == {"a"} and server.fetches == 1
    server.answer = {"keys": [named(OLD, "a"), named(NEW, "b")]}
    for n in range(20):  # made-up kids, or the new one too soon: no fetch
        await sets.keys("app", URI, f"made-up-{n}")
    assert server.fetches == 1
    clock.now += 30
    assert set(await sets.keys("app", URI, "b")) == {"a", "b"} and server.fetches == 2
    clock.now += 299  # used 5 minutes, then fetched again
    await sets.keys("app", URI, "a")
    assert server.fetches == 2
    clock.now += 1
    await sets.keys("app", URI, "a")
    assert server.fetches == 3
    await sets.close()


@pytest.mark.parametrize(
    "answer",
    [
        (500, GOOD, {}),
        (404, GOOD, {}),
        (302, GOOD, {"Location": URI}),  # redirects are not followed
        (200, b"not json", {}),
        (200, b"[" * 60_000, {}),  # deeper than json reads
        (200, b"[]", {}),
        (200, {"keys": []}, {}),
        (200, GOOD + b" " * MAX_JWKS_BYTES, {}),  # good JSON, too long
        (200, GOOD, {"Content-Encoding": "gzip"}),  # its size known only once unpacked
        (200, GOOD, {"Content-Encoding": "identity, gzip"}),
        (200, gzip.compress(GOOD), {"Content-Encoding": "GZIP"}),
        (200, {"keys": [named(NEW, "b"), named(PRIVATE, "c")]}, {}),  # refused whole
        (200, {"keys": [named(NEW, f"k{n}") for n in range(11)]}, {}),  # too many to try
    ],
)
async def test_a_bad_answer_keeps_the_keys_there_were(answer: tuple[Any, ...]) -> None:
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    sets = key_sets(server, clock)
    await sets.keys("app", URI, "a")
    server.answer = answer
    clock.now += 30
    assert set(await sets.keys("app", URI, "b")) == {"a"}  # fetched, and refused
    assert server.fetches == 2
    fresh = key_sets(server, clock)  # none ever fetched: none to use
    assert await fresh.keys("app", URI, "a") == {}
    await sets.close()
    await fresh.close()


async def test_a_first_fetch_that_failed_is_tried_again_after_the_cooldown() -> None:
    server, clock = Server((503, b"", {})), Clock()
    sets = key_sets(server, clock)
    assert await sets.keys("app", URI, "a") == {}
    assert await sets.keys("app", URI, "a") == {} and server.fetches == 1
    server.answer = {"keys": [named(OLD, "a")]}
    clock.now += 30
    assert set(await sets.keys("app", URI, "a")) == {"a"}
    await sets.close()


async def test_keys_no_fetch_could_renew_for_an_hour_are_dropped() -> None:
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    sets = key_sets(server, clock)
    await sets.keys("app", URI, "a")
    server.answer = (503, b"", {})
    clock.now += MAX_STALE - 1
    assert set(await sets.keys("app", URI, "a")) == {"a"}  # stale, still used
    clock.now += 1
    assert await sets.keys("app", URI, "a") == {}
    await sets.close()


async def test_a_slow_server_holds_up_no_assertion_whose_key_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fetch of old keys is under way: one with a known kid is answered at once, from
    the keys there are."""
    monkeypatch.setattr(client_assertions, "FETCH_SECONDS", 600)  # the gate, not a clock
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    sets = key_sets(server, clock, cooldown=1.0)
    await sets.keys("app", URI, "a")
    clock.now += 300
    server.gate, server.asked = asyncio.Event(), asyncio.Event()
    refreshing = asyncio.create_task(sets.keys("app", URI, "a"))
    await server.asked.wait()  # it holds the lock, fetching
    # (A bound that only a wait for the fetch reaches: its gate never opens alone.)
    assert set(await asyncio.wait_for(sets.keys("app", URI, "a"), 30)) == {"a"}
    assert not refreshing.done()  # answered while the fetch still waits
    server.gate.set()
    assert set(await refreshing) == {"a"}
    assert server.fetches == 2
    await sets.close()


async def test_the_cooldown_counts_from_the_end_of_a_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch that outlasts the cooldown does not let the next start at once, nor does
    one whose request was cancelled."""
    monkeypatch.setattr(client_assertions, "FETCH_SECONDS", 600)
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    sets = key_sets(server, clock, cooldown=30.0)
    await sets.keys("app", URI, "a")
    clock.now += 30
    server.gate, server.asked = asyncio.Event(), asyncio.Event()
    slow = asyncio.create_task(sets.keys("app", URI, "new"))
    await server.asked.wait()
    clock.now += 45  # longer than the cooldown
    server.gate.set()
    await slow
    assert set(await sets.keys("app", URI, "made-up")) == {"a"} and server.fetches == 2
    clock.now += 30
    server.gate, server.asked = asyncio.Event(), asyncio.Event()
    cancelled = asyncio.create_task(sets.keys("app", URI, "new"))
    await server.asked.wait()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await sets.keys("app", URI, "made-up")
    assert server.fetches == 3
    await sets.close()


async def test_one_key_without_a_kid_is_not_fetched_again_for_each_kid() -> None:
    """Such a key is the one every assertion names, whatever its `kid`."""
    server, clock = Server({"keys": [OLD]}), Clock()
    sets = key_sets(server, clock)
    for _ in range(12):  # over several cooldowns of 30 s, within its 5 minutes and past
        assert list(await sets.keys("app", URI, "any")) == [None]
        clock.now += 29
    assert server.fetches == 2  # once, and again past its 5 minutes


async def test_the_log_names_the_server_and_no_more(caplog: pytest.LogCaptureFixture) -> None:
    server, clock = Server((500, b"", {})), Clock()
    sets = key_sets(server, clock)
    await sets.keys("app", "https://app.example/secret-path/jwks.json?token=t0ps3cret", "a")
    assert "app.example" in caplog.text
    assert "secret-path" not in caplog.text and "t0ps3cret" not in caplog.text
    await sets.close()


async def test_a_fetch_that_never_ends_is_given_up_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FETCH_SECONDS for the whole fetch, however its server trickles (a shorter one
    here); had it waited for the answer, it would have the keys."""
    monkeypatch.setattr(client_assertions, "FETCH_SECONDS", 0.2)
    server, clock = Server({"keys": [named(OLD, "a")]}), Clock()
    server.delay = 5
    sets = key_sets(server, clock)
    assert await sets.keys("app", URI, "a") == {}
    await sets.close()


def test_a_published_set_gives_its_signing_keys_and_leaves_out_the_rest() -> None:
    encryption = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        as_dict=True,
    )
    keys = published_keys(
        {
            "keys": [
                named(OLD, "sig"),
                named(encryption, "enc") | {"use": "enc"},
                named(encryption, "oaep") | {"alg": "RSA-OAEP"},
                named(NEW, "x25519") | {"kty": "OKP", "crv": "X25519"},
                named(NEW, "ops") | {"key_ops": ["encrypt"]},
                "junk",
            ],
            "extra": "members are allowed",
        }
    )
    assert set(keys) == {"sig"}
    for bad, said in [
        ({"keys": [named(NEW, "sig"), named(OLD, "sig")]}, "two signing keys"),
        ({"keys": [NEW, named(OLD, "b")]}, "not each with a kid"),
        ({"keys": [named(encryption, "enc") | {"use": "enc"}]}, "no signing key"),
        ({"keys": [named(NEW, "a")] * 101}, "at most 100"),
        ([named(NEW, "a")], "not a JWK Set"),
    ]:
        with pytest.raises(ValueError, match=said):
            published_keys(bad)
