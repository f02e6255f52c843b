from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from email.message import EmailMessage

import pytest

from common.clock import utcnow
from common.events import NOTICES, EmailCodeEvent, EmailEventType
from infra.smtp_sink import code_in
from mailer_service.templates import TEMPLATES, render


def rendered(event: EmailCodeEvent, sender: str, product: str = "Films") -> EmailMessage:
    out = render(event, sender=sender, product=product)
    assert out.recipient == event.email
    message = email.message_from_bytes(out.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()
    return content


def test_every_type_has_a_template_in_every_locale() -> None:
    assert set(TEMPLATES) == {(kind, locale) for kind in EmailEventType for locale in ("en", "ru")}


@pytest.mark.parametrize(("kind", "locale"), list(TEMPLATES))
def test_every_template_renders_text_and_html(kind: EmailEventType, locale: str) -> None:
    now = utcnow()
    has_code = kind not in NOTICES
    event = EmailCodeEvent(
        type=kind,
        email="a@example.com",
        code="004217" if has_code else None,
        expires_at=now + timedelta(minutes=10) if has_code else None,
        occurred_at=now,
        locale=locale,
    )
    message = rendered(event, "Films <no-reply@example.com>")
    text, html = body(message, "plain"), body(message, "html")
    assert "Films" in message["Subject"]
    assert message["To"] == "a@example.com"
    assert message["X-Event-ID"] == event.event_id
    if has_code:
        assert code_in(message.as_bytes()) == "004217"
        assert "004217" in html
        assert "10" in text
    else:
        assert code_in(message.as_bytes()) is None


def test_unknown_locale_falls_back_to_english() -> None:
    event = EmailCodeEvent(
        type=EmailEventType.EMAIL_VERIFICATION, email="a@example.com", code="111111", locale="xx"
    )
    message = rendered(event, "x@example.com")
    assert message["Subject"] == "Your Films verification code"


def test_product_name_is_escaped_in_html() -> None:
    event = EmailCodeEvent(type=EmailEventType.ACCOUNT_EXISTS, email="a@example.com", locale="en")
    message = rendered(event, "x@example.com", product="<script>")
    html = body(message, "html")
    assert "<script>" not in html


def test_headers_are_encoded_for_non_ascii_names_and_subjects() -> None:
    event = EmailCodeEvent(
        type=EmailEventType.PASSWORD_RESET, email="a@example.com", code="123456", locale="ru"
    )
    out = render(event, sender="Фильмы <no-reply@films.example>", product="Фильмы")
    assert out.sender == "no-reply@films.example"
    assert out.data.isascii()  # RFC 2047 headers, base64 bodies: safe for any 7-bit relay
    message = email.message_from_bytes(out.data, policy=email.policy.default)
    subject = TEMPLATES[(EmailEventType.PASSWORD_RESET, "ru")].subject.format(product="Фильмы")
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Фильмы"
    assert message["Message-ID"].endswith("@films.example>")
    assert code_in(out.data) == "123456"
