"""Plain-text and HTML bodies for each event type, in English and Russian."""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from common.events import EmailCodeEvent, EmailEventType


@dataclass(frozen=True)
class Template:
    subject: str
    lead: str  # shown before the code
    tail: str  # shown after it


TEMPLATES: dict[tuple[EmailEventType, str], Template] = {
    (EmailEventType.EMAIL_VERIFICATION, "en"): Template(
        "Your {product} verification code",
        "Use this code to verify your email address:",
        "It expires in {minutes} minutes. If you did not sign up, ignore this email.",
    ),
    (EmailEventType.EMAIL_VERIFICATION, "ru"): Template(
        "Код подтверждения {product}",
        "Введите этот код, чтобы подтвердить адрес электронной почты:",
        "Код действует {minutes} мин. Если вы не регистрировались, просто проигнорируйте письмо.",
    ),
    (EmailEventType.PASSWORD_RESET, "en"): Template(
        "Your {product} password reset code",
        "Use this code to choose a new password:",
        "It expires in {minutes} minutes. If you did not ask for a reset, ignore this email.",
    ),
    (EmailEventType.PASSWORD_RESET, "ru"): Template(
        "Код для сброса пароля {product}",
        "Введите этот код, чтобы задать новый пароль:",
        "Код действует {minutes} мин. Если вы не запрашивали сброс, проигнорируйте письмо.",
    ),
    (EmailEventType.ACCOUNT_EXISTS, "en"): Template(
        "You already have a {product} account",
        "Someone (probably you) tried to sign up with this address, which already has an account.",
        "Log in instead, or reset your password if you have forgotten it.",
    ),
    (EmailEventType.ACCOUNT_EXISTS, "ru"): Template(
        "У вас уже есть аккаунт {product}",
        "Кто-то (вероятно, вы) пытался зарегистрироваться с этим адресом, но аккаунт уже есть.",
        "Войдите или восстановите пароль, если забыли его.",
    ),
}


def render(event: EmailCodeEvent, *, sender: str, product: str) -> EmailMessage:
    locale = event.locale if (event.type, event.locale) in TEMPLATES else "en"
    template = TEMPLATES[(event.type, locale)]
    minutes = 10
    if event.expires_at is not None:
        minutes = max(1, round((event.expires_at - event.occurred_at).total_seconds() / 60))
    values = {"product": product, "minutes": minutes}
    subject = template.subject.format(**values)
    lead = template.lead.format(**values)
    tail = template.tail.format(**values)

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = event.email
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=event.event_id.replace("-", ""))
    message["Auto-Submitted"] = "auto-generated"
    message["X-Event-ID"] = event.event_id

    code_line = f"\n\n    {event.code}\n\n" if event.code else "\n\n"
    message.set_content(f"{lead}{code_line}{tail}\n")
    code_html = (
        f'<p style="font-size:28px;letter-spacing:6px;font-family:monospace">'
        f"<strong>{html.escape(event.code)}</strong></p>"
        if event.code
        else ""
    )
    message.add_alternative(
        f'<!doctype html><html lang="{locale}"><body>'
        f"<p>{html.escape(lead)}</p>{code_html}<p>{html.escape(tail)}</p>"
        f"</body></html>",
        subtype="html",
    )
    return message
