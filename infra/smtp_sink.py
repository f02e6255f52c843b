"""A development SMTP server that prints each email's recipient and code and keeps it on disk.

This is the one place a plaintext code may be printed: it is the developer's inbox.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

CODE_RE = re.compile(r"\b(\d{6})\b")


def text_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""


def code_in(raw: bytes) -> str | None:
    match = CODE_RE.search(text_part(raw))
    return match.group(1) if match else None


class SinkHandler:
    def __init__(self, maildir: Path, announce: Callable[[str], None] = print) -> None:
        self.maildir = maildir
        self.announce = announce
        maildir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for rcpt in envelope.rcpt_tos:
            path = self.maildir / f"{stamp}-{time.monotonic_ns()}-{rcpt}.eml"
            path.write_bytes(raw)
            code = code_in(raw)
            self.announce(
                f"[smtp-sink] to={rcpt} subject={message['subject']!r} "
                f"code={code or '-'} saved={path}"
            )
        return "250 Message accepted for delivery"


def start_sink(
    host: str, port: int, maildir: Path, announce: Callable[[str], None] = print
) -> Controller:
    controller = Controller(SinkHandler(maildir, announce), hostname=host, port=port)
    controller.start()
    return controller
