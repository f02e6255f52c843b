"""`python -m bench.bare_smtp PORT COUNT CONNECTIONS PREFIX`: the mail figure's floor. The
same emails the mailer would send, rendered the same way, sent straight to the sink by a
bare loop over the same number of pooled connections: no Kafka, no database."""

from __future__ import annotations

import asyncio
import sys

from common.events import EmailCodeEvent, EmailEventType
from mailer_service.config import MailerSettings
from mailer_service.smtp import SmtpPool
from mailer_service.templates import render


def events(prefix: str, count: int) -> list[EmailCodeEvent]:
    return [
        EmailCodeEvent(
            type=EmailEventType.EMAIL_VERIFICATION, email=f"{prefix}{i}@example.com", code="123456"
        )
        for i in range(count)
    ]


async def send(port: int, count: int, connections: int, prefix: str) -> None:
    settings = MailerSettings(smtp_port=port, smtp_connections=connections)
    queue = [render(e, sender=settings.sender, product="Bench") for e in events(prefix, count)]
    queue.reverse()
    pool = SmtpPool(settings)

    async def worker() -> None:
        while queue:
            await pool.send(queue.pop())

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        await pool.close()


if __name__ == "__main__":
    port, count, connections, prefix = sys.argv[1:5]
    asyncio.run(send(int(port), int(count), int(connections), prefix))
