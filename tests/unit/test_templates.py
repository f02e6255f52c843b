from __future__ import annotations

from datetime import timedelta

import pytest

from common.events import EmailCodeEvent, EmailEventType, utcnow
from infra.smtp_sink import code_in
from mailer_service.templates import TEMPLATES, render


@pytest.mark.parametrize(("kind", "locale"), list(TEMPLATES))
def test_every_template_renders_text_and_html(kind: EmailEventType, locale: str) -> None:
    now = utcnow()
    has_code = kind is not EmailEventType.ACCOUNT_EXISTS
    event = EmailCodeEvent(
        type=kind,
        email="a@example.com",
        code="004217" if has_code else None,
        expires_at=now + timedelta(minutes=10) if has_code else None,
        occurred_at=now,
        locale=locale,
    )
    message = render(event, sender="Films <no-reply@example.com>", product="Films")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
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
    message = render(event, sender="x@example.com", product="Films")
    assert message["Subject"] == "Your Films verification code"


def test_product_name_is_escaped_in_html() -> None:
    event = EmailCodeEvent(type=EmailEventType.ACCOUNT_EXISTS, email="a@example.com", locale="en")
    message = render(event, sender="x@example.com", product="<script>")
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html
