"""The web front end's rules that need no browser: `next=` paths, language choice and the
catalogues, API refusals in words, the CSRF origin check, the session key and store, and
how two-step sign-in shows its secret."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from starlette.requests import Request

from common.db import make_engine, make_sessionmaker, migrate
from common.events import EmailEventType
from web_service.api import ApiProblem, problem_from
from web_service.config import WebSettings
from web_service.csrf import CsrfRejected, check, from_this_site
from web_service.forms import FORM_LEVEL, explain, whole_number
from web_service.i18n import LOCALES, Translator, catalogue, choose
from web_service.models import Base
from web_service.security import safe_next
from web_service.session_keys import load_sealer
from web_service.sessions import SessionStore, Tokens, id_hash
from web_service.two_step_pages import explain_code, grouped, qr_code

WEB = Path(__file__).resolve().parents[2] / "web_service"


@pytest.mark.parametrize(
    "path",
    ["/films", "/films?q=star%20wars&p=2", "/account/sessions", "/films/3#top", "/"],
)
def test_next_keeps_paths_of_this_site(path: str) -> None:
    assert safe_next(path) == path


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "films",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "HTTPS://evil.example",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/%2F%2Fevil.example",
        "/%2f/evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/%25252F%25252Fevil.example",
        "/\t/evil.example",
        "/%09/evil.example",
        "/\n/evil.example",
        " //evil.example",
        "http:evil.example",
        "/" + "a" * 3000,
        "http://[",  # urlsplit raises on these
        "//[x",
        "/%2F%2F%5Bx",
    ],
)
def test_next_refuses_anything_that_could_leave_the_site(target: str | None) -> None:
    assert safe_next(target) == "/films"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("2100", None),
        ("0", None),
        ("007", 7),
        ("\u00b2", None),  # isdigit() says yes, int() says no
        ("\u2460", None),
        ("-3", None),
        (" 3", None),
        ("3.0", None),
        ("1" + "0" * 5000, None),  # int() refuses over 4,300 digits
    ],
)
def test_whole_numbers_from_query_strings(text: str, expected: int | None) -> None:
    assert whole_number(text, 1, 2000) == expected


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("ru", "en-GB,en", "ru"),
        ("xx", "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        (None, "en;q=0.5, ru;q=0.9", "ru"),
        (None, "ru;q=0.8, en;q=0.8", "ru"),
        (None, "de-DE, fr;q=0.9", "en"),
        (None, "ru;q=0", "en"),
        (None, "ru;q=abc, en", "en"),
        (None, None, "en"),
    ],
)
def test_language_from_the_switch_then_accept_language(
    cookie: str | None, header: str | None, expected: str
) -> None:
    assert choose(cookie, header) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "секунду"),
        (2, "секунды"),
        (5, "секунд"),
        (11, "секунд"),
        (21, "секунду"),
        (22, "секунды"),
    ],
)
def test_russian_plurals(n: int, expected: str) -> None:
    assert Translator("ru")("error.rate_limited", n=n).endswith(f"{n} {expected}.")


def test_english_plurals_and_fallbacks() -> None:
    t = Translator("en")
    assert t("films.count", n=1) == "1 film found"
    assert t("films.count", n=3) == "3 films found"
    assert t("no.such.key") == "no.such.key"
    assert Translator("de").lang == "en"


def placeholders(message: str | list[str]) -> set[str]:
    texts = message if isinstance(message, list) else [message]
    return {name for text in texts for name in re.findall(r"\{(\w+)\}", text)}


def test_the_catalogues_agree() -> None:
    en, ru = catalogue("en"), catalogue("ru")
    assert set(en) == set(ru)
    for key in en:
        assert placeholders(en[key]) == placeholders(ru[key]), key
        if isinstance(en[key], list):
            assert len(en[key]) == 2 and isinstance(ru[key], list) and len(ru[key]) == 3, key
    # Russian is Russian: most messages are in Cyrillic.
    cyrillic = [k for k, v in ru.items() if re.search("[\u0430-\u044f\u0451]", str(v).lower())]
    assert len(cyrillic) > 0.9 * len(ru)


def test_every_email_type_has_a_name_on_the_deliveries_page() -> None:
    """The admin's deliveries list names each email by its type (`label`), in words."""
    for lang in ("en", "ru"):
        missing = {kind for kind in EmailEventType if f"mail.{kind}" not in catalogue(lang)}
        assert not missing, (lang, missing)


def test_every_message_the_code_asks_for_exists() -> None:
    sources = [*WEB.glob("*.py"), *WEB.glob("templates/*.html")]
    asked = r"""(?:t|notice)\(\s*["']([a-z_]+\.[a-z_.\-]+)["']"""
    named = r'"((?:error|notice)\.[a-z_.]+)"'  # in tables and handlers
    used = {key for path in sources for key in re.findall(asked, path.read_text())}
    used |= {key for path in WEB.glob("*.py") for key in re.findall(named, path.read_text())}
    used.discard("error.html")  # a template's name
    assert len(used) > 100, "the patterns find the keys"
    missing = used - set(catalogue("en"))
    assert not missing
    assert {p.name for p in LOCALES.iterdir()} == {"en.json", "ru.json"}


def test_validation_details_land_on_their_fields() -> None:
    problem = ApiProblem(
        422,
        "invalid_request",
        details=[
            {"loc": ["body", "email"], "type": "value_error"},
            {"loc": ["body", "password"], "type": "string_too_short"},
            {"loc": ["body", "code"], "type": "string_pattern_mismatch"},
            {"loc": ["body", "new_password"], "type": "password_too_common"},
        ],
    )
    errors = explain(problem, Translator("en"))
    assert errors == {
        "email": "Enter an email address like name@example.com.",
        "password": "Use at least 8 characters.",
        "code": "Enter the 6 digits from the email.",
        "new_password": (
            "This password is one of the most common ones, which are guessed first. Choose another."
        ),
    }
    mine = ApiProblem(
        422, "invalid_request", details=[{"loc": ["body", "password"], "type": "password_is_email"}]
    )
    assert explain(mine, Translator("en")) == {
        "password": "The password may not be your email address."
    }


def test_known_refusals_in_words_on_the_right_field() -> None:
    t = Translator("en")
    wrong = ApiProblem(400, "invalid_password")
    assert explain(wrong, t, {"password": "current_password"}) == {
        "current_password": "Your current password is wrong."
    }
    assert explain(ApiProblem(401, "invalid_credentials"), t) == {
        FORM_LEVEL: "The email address or the password is wrong."
    }
    assert explain(ApiProblem(418, "teapot"), t) == {
        FORM_LEVEL: "Something went wrong on our side. Try again."
    }
    assert explain(ApiProblem(503, "unavailable"), t) == {
        FORM_LEVEL: "The service is not answering right now. Try again in a minute."
    }


def test_a_refusal_keeps_its_whole_answer() -> None:
    """auth's `mfa_required` carries the token for the second step beside its error."""
    answer = {"error": "mfa_required", "message": "m", "mfa_token": "opaque", "expires_in": 300}
    problem = problem_from(httpx.Response(403, json=answer))
    assert (problem.status, problem.error) == (403, "mfa_required")
    assert problem.body["mfa_token"] == "opaque" and problem.body["expires_in"] == 300
    assert "opaque" not in str(problem)  # what logs would show
    assert problem_from(httpx.Response(502, json={"error": "x", "secret": "s"})).body == {}
    assert problem_from(httpx.Response(400, text="not json")).body == {}


def test_a_wrong_code_is_told_as_the_apps_not_the_emails() -> None:
    t = Translator("en")
    app = "The code is wrong or already used."
    wrong = explain_code(ApiProblem(400, "invalid_code"), t, "error.two_step_code")
    assert wrong["code"].startswith(app)
    malformed = ApiProblem(422, "invalid_request", details=[{"loc": ["body", "code"], "type": "x"}])
    assert explain_code(malformed, t, "error.two_step_code")["code"].startswith(app)
    password = explain_code(ApiProblem(400, "invalid_password"), t, "error.two_step_code")
    assert password == {"password": "Your current password is wrong."}
    assert explain(ApiProblem(409, "mfa_not_enabled"), t) == {
        FORM_LEVEL: "Two-step sign-in is off already."
    }
    waited = explain_code(ApiProblem(429, "too_many_code_attempts", retry_after=30), t, "x")
    assert waited[FORM_LEVEL].endswith("Try again in 30 seconds.")


def test_the_secret_in_groups_and_a_qr_code_the_csp_allows() -> None:
    assert grouped("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP") == "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP"
    assert grouped("ABCDEF") == "ABCD EF"
    uri = "otpauth://totp/Films:a%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Films"
    svg = str(qr_code(uri, 'QR code for <b>"you"</b>'))
    assert svg.startswith('<svg role="img" viewBox=') and svg.endswith("</svg>")
    assert "<title>QR code for &lt;b&gt;" in svg
    # Inline style and script are refused by the Content-Security-Policy; nor is the
    # secret written out beside the code.
    for refused in ("style", "<script", "href", "JBSWY3DP"):
        assert refused not in svg


def test_rate_limits_say_when_to_try_again() -> None:
    locked = ApiProblem(429, "account_locked", retry_after=90)
    assert explain(locked, Translator("en"))[FORM_LEVEL].endswith("Try again in 90 seconds.")
    limited = ApiProblem(429, "rate_limited", retry_after=1)
    assert explain(limited, Translator("ru"))[FORM_LEVEL].endswith("через 1 секунду.")


def request(headers: dict[str, str], scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/logout",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "server": ("127.0.0.1", 8003),
        }
    )


def test_a_post_must_come_from_this_origin() -> None:
    here = {"host": "films.example"}
    assert from_this_site(request(here | {"origin": "http://films.example"}), None)
    assert not from_this_site(request(here | {"origin": "http://evil.example"}), None)
    assert not from_this_site(request(here | {"origin": "null"}), None)
    assert not from_this_site(request(here | {"origin": "http://films.example"}, "https"), None)
    assert from_this_site(
        request(here | {"origin": "https://films.example"}), "https://films.example/"
    )
    assert not from_this_site(request(here | {"sec-fetch-site": "cross-site"}), None)
    assert not from_this_site(request(here | {"sec-fetch-site": "same-site"}), None)
    assert from_this_site(request(here | {"sec-fetch-site": "same-origin"}), None)
    assert from_this_site(request(here), None)  # neither header: the token decides


async def test_a_post_needs_the_session_token(store: SessionStore) -> None:
    here = request({"host": "films.example", "origin": "http://films.example"})
    visitor = store.anonymous()
    token = visitor.csrf_token()
    with pytest.raises(CsrfRejected):  # never stored: no token was ever handed out for it
        check(here, visitor, {"csrf": token}, None)
    await store.save(visitor)
    check(here, visitor, {"csrf": token}, None)
    for form in ({}, {"csrf": ""}, {"csrf": token[:-1]}, {"csrf": token + "x"}):
        with pytest.raises(CsrfRejected):
            check(here, visitor, form, None)
    cross = request({"host": "films.example", "origin": "http://evil.example"})
    with pytest.raises(CsrfRejected):
        check(cross, visitor, {"csrf": token}, None)


def settings_in(tmp_path: Path, **overrides: object) -> WebSettings:
    return WebSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
        session_key_path=tmp_path / "keys" / "web_session_key",
        **overrides,  # type: ignore[arg-type]
    )


def test_production_refuses_a_missing_or_shared_session_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        load_sealer(settings_in(tmp_path, env="production"))
    load_sealer(settings_in(tmp_path))  # development makes one
    key = tmp_path / "keys" / "web_session_key"
    assert key.stat().st_mode & 0o777 == 0o600
    os.chmod(key, 0o644)
    with pytest.raises(SystemExit, match="readable by other users"):
        load_sealer(settings_in(tmp_path, env="production"))
    key.write_text("not a key\n")
    with pytest.raises(SystemExit, match="Fernet key"):
        load_sealer(settings_in(tmp_path))


def test_a_rotated_key_still_opens_what_the_old_one_sealed(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    old = load_sealer(settings).encrypt(b"tokens")
    key = settings.session_key_path
    key.write_bytes(Fernet.generate_key() + b"\n" + key.read_bytes())
    assert load_sealer(settings).decrypt(old) == b"tokens"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    settings = settings_in(tmp_path, session_idle_seconds=3600)
    engine = make_engine(settings.database_url)
    await migrate(engine, Base)
    yield SessionStore(make_sessionmaker(engine), load_sealer(settings), settings)
    await engine.dispose()


def rows(tmp_path: Path) -> list[tuple[str, ...]]:
    with sqlite3.connect(tmp_path / "web.db") as db:
        return db.execute("SELECT id_hash, tokens, data FROM web_sessions").fetchall()


async def test_a_session_is_kept_only_once_it_holds_something(
    store: SessionStore, tmp_path: Path
) -> None:
    visitor = store.anonymous()
    await store.save(visitor)
    assert rows(tmp_path) == []  # a page without a form stores nothing
    token = visitor.csrf_token()
    await store.save(visitor)
    assert visitor.cookie is not None
    [(key, _, _)] = rows(tmp_path)
    assert key == id_hash(visitor.cookie) != visitor.cookie  # only the hash is stored
    again = await store.load(visitor.cookie)
    assert again.stored and again.csrf_token() == token
    assert not (await store.load("forged")).stored
    assert (await store.load("forged")).lapsed


async def test_signing_in_starts_a_new_session_and_seals_the_tokens(
    store: SessionStore, tmp_path: Path
) -> None:
    visitor = store.anonymous()
    visitor.csrf_token()
    await store.save(visitor)
    tokens = Tokens("access.jwt.value", "refresh-secret-value", 0.0)
    signed = await store.sign_in(visitor, tokens, "user-1", {"email": "a@example.com"})
    assert signed.cookie != visitor.cookie
    assert signed.data["csrf"] != visitor.data["csrf"]
    assert not (await store.load(visitor.cookie)).stored  # the old id is gone
    assert (await store.load(signed.cookie)).tokens == tokens
    [(_, sealed_tokens, sealed_data)] = rows(tmp_path)
    for secret in (
        "refresh-secret-value",
        "access.jwt.value",
        "a@example.com",
        signed.data["csrf"],
    ):
        assert secret not in sealed_tokens + sealed_data


async def test_idle_sessions_expire_and_are_purged(store: SessionStore, tmp_path: Path) -> None:
    visitor = store.anonymous()
    visitor.csrf_token()
    await store.save(visitor)
    assert (await store.load(visitor.cookie)).stored
    with sqlite3.connect(tmp_path / "web.db") as db:
        db.execute("UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00.000000'")
    assert (await store.load(visitor.cookie)).lapsed
    assert await store.purge() == 1
    assert rows(tmp_path) == []


async def test_one_request_at_a_time_may_spend_the_refresh_token(store: SessionStore) -> None:
    visitor = store.anonymous()
    signed = await store.sign_in(visitor, Tokens("a", "r", 0.0), "u", {})
    first, second = await store.load(signed.cookie), await store.load(signed.cookie)
    assert await store.claim_refresh(first, lease=30)
    assert not await store.claim_refresh(second, lease=30)
    await store.store_tokens(first, Tokens("a2", "r2", 1.0))
    # The lease is released, but `second` read the old version: it must take the new pair.
    assert not await store.claim_refresh(second, lease=30)
    assert await store.reload_tokens(second)
    assert second.tokens == Tokens("a2", "r2", 1.0) and second.version == 1


async def test_a_lease_that_ran_out_is_left_to_its_next_holder(store: SessionStore) -> None:
    """Requests that outlived their leases must not free the lease another request took
    since, neither by giving theirs back nor by storing a pair."""
    signed = await store.sign_in(store.anonymous(), Tokens("a", "r", 0.0), "u", {})
    first, second, holder = [await store.load(signed.cookie) for _ in range(3)]
    for late in (first, second):
        assert await store.claim_refresh(late, lease=0.05)
        await asyncio.sleep(0.1)  # at least this long: the lease has run out
    assert await store.claim_refresh(holder, lease=30)

    await store.release_refresh(first)
    assert not await store.claim_refresh(await store.load(signed.cookie), lease=30)
    assert await store.take_tokens(second, Tokens("a2", "r2", 1.0))
    assert not await store.claim_refresh(await store.load(signed.cookie), lease=30)

    await store.release_refresh(holder)  # its holder gives it back: free for the next
    assert await store.claim_refresh(await store.load(signed.cookie), lease=30)


async def test_a_lease_is_renewed_only_by_its_holder(store: SessionStore) -> None:
    signed = await store.sign_in(store.anonymous(), Tokens("a", "r", 0.0), "u", {})
    holder, late = await store.load(signed.cookie), await store.load(signed.cookie)
    assert not await store.renew_refresh(holder, lease=30)  # nothing to renew yet
    assert await store.claim_refresh(holder, lease=0.05)
    assert await store.renew_refresh(holder, lease=30)
    await asyncio.sleep(0.1)  # longer than the first lease: only the renewal holds it
    assert not await store.claim_refresh(late, lease=30)

    await store.release_refresh(holder)
    assert await store.claim_refresh(late, lease=0.05)
    await asyncio.sleep(0.1)
    other = await store.load(signed.cookie)
    assert await store.claim_refresh(other, lease=30)  # `late` ran out; `other` holds it
    assert not await store.renew_refresh(late, lease=30)
    assert not await store.claim_refresh(await store.load(signed.cookie), lease=30)


def test_settings_read_trusted_proxies_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")
    assert WebSettings().trusted_proxies == ["10.0.0.1", "192.168.0.0/16"]


def test_the_readme_shows_screenshots_that_exist() -> None:
    root = WEB.parent
    shown = re.findall(r"\((docs/screenshots/[\w-]+\.png)\)", (root / "README.md").read_text())
    assert len(shown) >= 8
    assert all((root / path).stat().st_size > 10_000 for path in shown)
