"""Kafka client set-up shared by the auth relay and the mailer: settings, the producer,
topic creation, and the one reconnect/backoff policy both use while the broker is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import IllegalStateError, KafkaError
from prometheus_client import Counter
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
T = TypeVar("T")

CONSUMER_FAILURES = Counter(
    "kafka_consumer_failures_total",
    "Kafka consumers started again after an unexpected error",
    ["consumer"],
)


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", hide_input_in_errors=True)

    bootstrap_servers: str = "localhost:9092"
    # Tansu (the embedded broker) cannot do InitProducerId; real Kafka can.
    enable_idempotence: bool = False
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    request_timeout_ms: int = Field(default=10_000, ge=1_000)
    # How the clients reach the broker: TLS (SSL), SASL, both, or neither (a broker on a
    # network nobody else can reach; the codes travel in its records).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None  # None: the system's trusted authorities
    ssl_certfile: Path | None = None  # a client certificate, for brokers that ask for one
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        """Refuse, at start-up, settings that would be ignored or would leak: a service
        that silently talks to the broker in the clear is worse than one that stops."""
        protocol = f"KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
        if not self.sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(f"KAFKA_SASL_* settings are ignored with {protocol}")
        if self.sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            needed = "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            raise ValueError(f"{protocol} needs {needed}")
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise ValueError(
                "KAFKA_SASL_MECHANISM=PLAIN would send the password in the clear: "
                "use KAFKA_SECURITY_PROTOCOL=SASL_SSL, or a SCRAM mechanism"
            )
        given = [self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password]
        if not self.tls and any(value is not None for value in given):
            raise ValueError(f"KAFKA_SSL_* settings are ignored with {protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("KAFKA_SSL_KEY_PASSWORD is ignored without KAFKA_SSL_KEYFILE")
        if self.tls:
            try:
                self.ssl_context()  # unreadable files or a wrong key password: say so now
            except OSError as exc:  # ssl.SSLError is one
                raise ValueError(f"KAFKA_SSL_* files cannot be used: {exc}") from exc
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate and name (TLS 1.2 at least) and presents ours
        if we have one. Made afresh for each client: the files are read again whenever a
        service makes its Kafka clients anew (at start, and after losing the broker), not
        when aiokafka reopens a connection of a client it keeps."""
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile is not None:
            password = self.ssl_key_password
            context.load_cert_chain(
                self.ssl_certfile,
                self.ssl_keyfile,
                password=None if password is None else password.get_secret_value(),
            )
        return context

    def client_options(self) -> dict[str, Any]:
        """Where the broker is and how to reach it, for any aiokafka client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            assert self.sasl_password is not None  # _coherent
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        return options


def make_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **settings.client_options(),
        acks="all",
        enable_idempotence=settings.enable_idempotence,
        request_timeout_ms=settings.request_timeout_ms,
        linger_ms=2,
    )


def broker_check(settings: KafkaSettings) -> Callable[[], Awaitable[bool]]:
    """For /readyz: True when a broker of the bootstrap list answers as Kafka does (an
    ApiVersions exchange), through TLS and SASL where they are set. A wrong password or
    certificate then shows as the broker being down, not only in the logs; a bare TCP
    connection would have said it was up."""

    async def check() -> bool:
        options = settings.client_options()
        for server in options.pop("bootstrap_servers").split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                conn = await create_conn(
                    host.strip("[]"), int(port), request_timeout_ms=2_000, **options
                )
            except (KafkaError, OSError, ValueError):
                continue
            conn.close()
            return True
        return False

    return check


class BrokerReset(Exception):
    """Topics this process relies on are gone: the broker restarted empty (the embedded,
    memory-only broker does that). Reconnect, recreate them, and send again."""


async def topic_partitions(producer: AIOKafkaProducer, *names: str) -> dict[str, int]:
    """Partition counts of those of `names` the broker has, from a fresh all-topics
    metadata request (which, unlike one naming the topics, never makes Tansu create them)."""
    cluster = await producer.client.fetch_all_metadata()
    return {
        name: len(cluster.partitions_for_topic(name) or ())
        for name in names
        if name in cluster.topics()
    }


async def changed_topics(producer: AIOKafkaProducer, known: dict[str, int]) -> set[str]:
    """The topics of `known` that are gone or have another partition count than when they
    were seen: the broker restarted (Tansu re-creates a topic with 4 partitions as soon as
    any client names it in a metadata request, as a producer refreshing its topics does).
    Also those the producer itself sees with another count: it would send to partitions
    the broker's topic does not have (Tansu acknowledges such records, and drops them)."""
    now = await topic_partitions(producer, *known)
    cached = producer.client.cluster
    return {
        name
        for name, count in known.items()
        if now.get(name) != count or len(cached.partitions_for_topic(name) or range(count)) != count
    }


@contextlib.asynccontextmanager
async def _admin(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        **settings.client_options(),
        request_timeout_ms=settings.request_timeout_ms,
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def missing_topics(settings: KafkaSettings, *names: str) -> set[str]:
    """Those of `names` the broker does not have, from a listing of all its topics (which,
    unlike a request naming them, never makes Tansu create them)."""
    async with _admin(settings) as admin:
        return set(names) - set(await admin.list_topics())


async def recreate_topics(settings: KafkaSettings, *names: str) -> None:
    """Delete the topics, then create them as ensure_topics would: for topics a restarted
    broker re-created on its own (wrong partition count, maybe stray records)."""
    async with _admin(settings) as admin:
        present = set(names) & set(await admin.list_topics())
        if present:
            await admin.delete_topics(sorted(present))
            await _deleted(admin, settings, present)
    await ensure_topics(settings, *names)


async def _deleted(admin: AIOKafkaAdminClient, settings: KafkaSettings, names: set[str]) -> None:
    async with asyncio.timeout(settings.request_timeout_ms / 1000):
        # Polling the broker: Kafka deletes lazily and tells no one when it is done.
        while names & set(await admin.list_topics()):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def ensure_topics(settings: KafkaSettings, *names: str) -> set[str]:
    """Create the topics that are missing; returns the ones this call created.

    Call it for the topics this process writes. A topic found missing is created, deleted
    and created again: Tansu acknowledges records produced to a topic it does not have (a
    producer whose metadata predates a restart sends them) and keeps them, and creating the
    topic restarts its offsets at 0 on top of them, so later records fail to be written or
    hide behind them. Deleting the new topic drops them. (On Apache Kafka this only ever
    deletes a topic created a moment before, still empty.)
    """
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
        missing = sorted(name for name in names if name not in existing)
        if not missing:
            return set()
        created = await _create(admin, settings, missing)
        if created:
            await admin.delete_topics(sorted(created))
            await _deleted(admin, settings, created)
            await _create(admin, settings, sorted(created))
        return created


async def _create(
    admin: AIOKafkaAdminClient, settings: KafkaSettings, names: list[str]
) -> set[str]:
    response = await admin.create_topics(
        [
            NewTopic(name, settings.topic_partitions, settings.topic_replication_factor)
            for name in names
        ]
    )
    created = set()
    for topic, error_code, message in response.topic_errors:
        if error_code == 0:
            created.add(topic)
        elif error_code != TOPIC_ALREADY_EXISTS:
            raise RuntimeError(f"cannot create topic {topic}: {error_code} {message}")
    return created


def being_cancelled() -> bool:
    """True if someone asked the current task to stop, as opposed to a CancelledError
    raised inside something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def started(consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
    """`consumer`, started; stopped again if starting fails (its connections not leaked)."""
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def end_and_position(
    consumer: AIOKafkaConsumer, tp: TopicPartition
) -> tuple[int, int] | None:
    """The partition's end as the last fetch saw it, and our position in it; None while
    either is unknown, or the partition is being taken away (a rebalance)."""
    end = consumer.highwater(tp)
    if end is None:
        return None
    try:
        position = await asyncio.wait_for(consumer.position(tp), 1.0)
    except (KafkaError, IllegalStateError, TimeoutError, AssertionError):
        return None
    return end, position


async def close_quietly(client: Any, what: str, within: float = 10.0) -> None:
    """Stop a Kafka client, giving up after `within` seconds: one whose broker went away
    can wait on it a long time, and a leaked client is better than a stuck process."""
    try:
        await asyncio.wait_for(client.stop(), within)
    except TimeoutError:
        log.warning("%s did not stop within %.0fs; abandoning it", what, within)
    except (KafkaError, OSError) as exc:
        log.warning("%s stopped with an error: %s", what, exc)
    except asyncio.CancelledError:
        # aiokafka's consumer, stopped while a fetch is backing off, awaits the fetch task
        # it has just cancelled: its CancelledError is not ours to pass on.
        if being_cancelled():
            raise
        log.warning("%s stopped with one of its own tasks cancelled", what)


class Backoff:
    """Waits between attempts to reach the broker: 0.2 s, doubling, at most 10 s."""

    def __init__(self, first: float = 0.2, most: float = 10.0) -> None:
        self._first, self._most = first, most
        self.delay = first

    def reset(self) -> None:
        self.delay = self._first

    async def wait(self, stopping: asyncio.Event | None = None) -> None:
        """Sleep the current delay (cut short by `stopping`), then double it."""
        delay, self.delay = self.delay, min(self.delay * 2, self._most)
        if stopping is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)


async def until_connected(
    start: Callable[[], Awaitable[T]],
    what: str,
    stopping: asyncio.Event | None = None,
    attempt: Callable[[], None] | None = None,
) -> T | None:
    """`start()` (which cleans up after itself on failure), retried with Backoff while the
    broker is unreachable; None if `stopping` is set first. `attempt` is called before
    each try (a heartbeat for a supervisor)."""
    backoff = Backoff()
    while stopping is None or not stopping.is_set():
        if attempt is not None:
            attempt()
        try:
            return await start()
        except (KafkaError, OSError) as exc:
            log.warning("%s: broker unreachable (%s); retrying in %.1fs", what, exc, backoff.delay)
            await backoff.wait(stopping)
    return None


# How long a consumer must have run for its next failure to start the backoff afresh.
STEADY_SECONDS = 60.0


async def keep_running(
    run: Callable[[], Awaitable[None]], consumer: str, stopping: asyncio.Event
) -> None:
    """`run()` (a consumer's whole life: connect, consume until `stopping`, disconnect),
    started again whenever it fails, until it returns. A consumer's task that ended on an
    error nobody expected would stop consuming for good with only /readyz to show for it.
    A CancelledError that is not a stop counts as such an error: aiokafka raises the
    cancellation of futures of its own."""
    backoff = Backoff()
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            if stopping.is_set() or being_cancelled():
                raise
            log.exception("consumer %s was cancelled from inside; starting it again", consumer)
        except Exception:
            if stopping.is_set():
                log.exception("consumer %s failed while stopping", consumer)
                return
            log.exception("consumer %s failed; starting it again", consumer)
        CONSUMER_FAILURES.labels(consumer).inc()
        if time.monotonic() - started > STEADY_SECONDS:
            backoff.reset()
        await backoff.wait(stopping)
        if stopping.is_set():
            return
