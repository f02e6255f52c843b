"""Where a failed email goes next, and when a waiting one is due.

A transient failure moves the event to the delay tier for its attempt
(`auth.email-codes.retry.N`) with headers saying the next attempt number, the time before
which it must not be tried, and why; a permanent failure (or the last attempt) goes to the
dead-letter topic with the reason. Both are acknowledged by the broker before the offset
of the original record is committed, so an email is always in exactly one place.
"""

from __future__ import annotations

import json
import logging
import random
import time

from aiokafka import AIOKafkaProducer, ConsumerRecord

from common.clock import utcnow
from common.events import EMAIL_CODES_DLQ_TOPIC, retry_topic
from mailer_service.metrics import MAILS

log = logging.getLogger(__name__)

ATTEMPT_HEADER, NOT_BEFORE_HEADER, REASON_HEADER, FAILED_AT_HEADER = (
    "attempt",
    "not-before",
    "reason",
    "failed_at",
)
OWN_HEADERS = {ATTEMPT_HEADER, NOT_BEFORE_HEADER, REASON_HEADER, FAILED_AT_HEADER}


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


def attempt_of(record: ConsumerRecord, max_attempts: int) -> int:
    """The attempt this record stands for (1 on the main topic)."""
    try:
        attempt = int(header(record, ATTEMPT_HEADER) or 1)
    except ValueError:
        attempt = 1
    return min(max(attempt, 1), max_attempts)


def not_before(record: ConsumerRecord) -> float:
    """Epoch seconds before which a record waiting in a delay tier must not be tried."""
    try:
        return float(header(record, NOT_BEFORE_HEADER) or 0) / 1000
    except ValueError:
        return 0.0


def _carried(record: ConsumerRecord) -> list[tuple[str, bytes]]:
    """The record's headers without ours (the request id travels on)."""
    return [(k, bytes(v)) for k, v in record.headers or () if k not in OWN_HEADERS]


class Redirector:
    def __init__(self, producer: AIOKafkaProducer, delays: list[float]) -> None:
        self._producer = producer
        self._delays = delays

    async def retry_later(self, record: ConsumerRecord, attempt: int, reason: str) -> float:
        """Move the event to its delay tier (acknowledged by the broker); the delay chosen."""
        tier = min(attempt - 1, len(self._delays) - 1)
        delay = self._delays[tier] * random.uniform(0.8, 1.0)
        headers = [
            *_carried(record),
            (ATTEMPT_HEADER, str(attempt + 1).encode()),
            (NOT_BEFORE_HEADER, str(int((time.time() + delay) * 1000)).encode()),
            (REASON_HEADER, reason.encode()[:1000]),
        ]
        await self._producer.send_and_wait(
            retry_topic(tier), record.value, key=record.key, headers=headers
        )
        MAILS.labels("retried").inc()
        return delay

    async def dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        headers = [
            *_carried(record),
            (REASON_HEADER, reason.encode()[:1000]),
            (FAILED_AT_HEADER, utcnow().isoformat().encode()),
        ]
        await self._producer.send_and_wait(
            EMAIL_CODES_DLQ_TOPIC, record.value, key=record.key, headers=headers
        )
        MAILS.labels("dead_lettered").inc()
        log.error(
            "dead-lettered offset %d of %s-%d: %s",
            record.offset,
            record.topic,
            record.partition,
            json.dumps(reason),
        )
