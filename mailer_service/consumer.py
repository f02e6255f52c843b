"""The mailer's Kafka side: join the group, poll, hold retries until due, commit.

Offsets are committed only after every email of a batch was accepted by the SMTP server,
moved to a retry topic or dead-lettered (`dispatch.py`), so a crash redelivers instead of
losing. A record waiting in a delay tier is not polled again and again: its partition is
sought back to it and paused until it is due, while the main topic and other partitions
keep flowing. Rebalances are seen through an explicit listener, which also tells
`/readyz` when the group has been joined.

A broker that restarts empty (the embedded one keeps nothing) is noticed within seconds:
the mailer creates the topics it writes again, replaces its producer, looks for the main
topic anew and rereads what it had not committed, without a restart of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from common.events import (
    DELIVERY_STATUS_TOPIC,
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    EMAIL_CODES_TOPICS_PATTERN,
    retry_topic,
)
from common.kafka import (
    Backoff,
    BrokerReset,
    KafkaSettings,
    being_cancelled,
    changed_topics,
    close_quietly,
    end_and_position,
    ensure_topics,
    keep_running,
    make_producer,
    recreate_topics,
    topic_partitions,
    until_connected,
)
from common.metrics import shared as shared_metrics
from mailer_service.config import MailerSettings
from mailer_service.dispatch import Dispatcher
from mailer_service.history import History
from mailer_service.metrics import LAG, MAILS
from mailer_service.retries import Redirector, not_before
from mailer_service.smtp import SmtpPool
from mailer_service.status import StatusAnnouncer

log = logging.getLogger(__name__)

# How often the mailer checks that the broker still has its topics (a memory-only broker
# restarts empty), and how stale its view of which topics match the pattern may get.
TOPIC_CHECK_SECONDS = 2.0
METADATA_MAX_AGE_MS = 5_000
# A group join normally takes a few seconds; one not finished after this long is given
# up and the consumer replaced (seen after a broker restarted in the middle of a commit).
JOIN_STALL_SECONDS = 30.0
# How long a revocation waits for the batch in flight to be sent and committed. Longer
# would risk the group's rebalance timeout (max.poll.interval.ms, 300 s) and our
# membership; a batch still going after this may be repeated by the next owner.
SETTLE_SECONDS = 60.0


class JoinStalled(Exception):
    """The consumer has been without an assignment for JOIN_STALL_SECONDS."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, mailer: Mailer) -> None:
        self._mailer = mailer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # A rebalance can come while a batch is being sent (a member joins or leaves).
        # The batch is finished and committed first: otherwise the partitions' next
        # owner would read it again from the last commit and send it too.
        await self._mailer.settle()
        self._mailer.forget(revoked)
        self._mailer.left_group()

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._mailer.joined = True
        log.info("assigned %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))


class Mailer:
    def __init__(
        self,
        settings: MailerSettings,
        kafka: KafkaSettings,
        history: History,
        smtp: SmtpPool,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._history = history
        self._smtp = smtp
        delays = settings.retry_delays_seconds
        # The topics the mailer writes, hence creates; the main topic is auth's relay's.
        self._own_topics = [
            *(retry_topic(tier) for tier in range(len(delays))),
            EMAIL_CODES_DLQ_TOPIC,
            DELIVERY_STATUS_TOPIC,
        ]
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reset = asyncio.Event()  # set by the watchdog: the broker lost our topics
        # After a reset: read every assigned partition from its start, once assigned.
        self._reread = False
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._next_lag_check = 0.0
        self._lag_reported: set[tuple[str, str]] = set()
        self._known: dict[str, int] = {}  # partitions of our topics when we made them
        self.running = False
        # True once the group has handed us an assignment (maybe empty): ready to consume.
        self.joined = False
        self._unjoined_since = time.monotonic()
        self._settled = asyncio.Event()  # no batch is being worked on
        self._settled.set()

    async def settle(self) -> None:
        """Return once no batch is in flight (sent and committed), or after SETTLE_SECONDS."""
        try:
            await asyncio.wait_for(self._settled.wait(), SETTLE_SECONDS)
        except TimeoutError:
            log.warning("a batch still in flight after %.0fs of a rebalance", SETTLE_SECONDS)

    def left_group(self) -> None:
        """The assignment was revoked: a (re)join is under way."""
        if self.joined:
            self._await_join()

    def _await_join(self) -> None:
        self.joined = False
        self._unjoined_since = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailer-consumer")

    async def stop(self) -> None:
        """Let in-flight sends finish and commit, then leave the group."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self._settings.smtp_timeout_seconds + 5)
            except TimeoutError:
                log.warning("in-flight sends did not finish in time; they will be redelivered")
            except asyncio.CancelledError:
                if being_cancelled():
                    raise
                # aiokafka's stop() re-raises its fetch task's cancellation when the broker
                # is already gone; uncommitted records are redelivered, so nothing is lost.
                log.warning("consumer stopped without reaching the broker")
            self._task = None

    async def _connect(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=self._settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._settings.batch_size,
            # How long the broker may hold a fetch when there is nothing new: bounds the
            # wait of the first email after a quiet spell (Kafka's default is 500 ms).
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            # A pattern subscription sees a new topic only at a metadata refresh (5 min by
            # default): e.g. the main topic once the relay creates it again.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        producer = await self._new_producer()
        try:
            # By pattern, not by list: records waiting in a tier that a smaller
            # MAILER_RETRY_DELAYS_SECONDS no longer names are still consumed.
            consumer.subscribe(pattern=EMAIL_CODES_TOPICS_PATTERN, listener=_Rebalance(self))
            self._await_join()  # before start(): the first assignment may come during it
            await consumer.start()
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        return consumer, producer

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = make_producer(self._kafka)
        try:
            if await ensure_topics(self._kafka, *self._own_topics) and self._known:
                # Topics we had made were gone: the broker restarted empty, perhaps seen
                # first as the error that made us connect again. Its offsets are new.
                self._reread = True
            await producer.start()
            self._known = await topic_partitions(producer, *self._own_topics)
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _run(self) -> None:
        await keep_running(self._serve, "mailer", self._stopping)

    async def _serve(self) -> None:
        """Connect, consume until stopping, disconnect; an unexpected error ends it after
        the disconnect (and keep_running starts it again): what was not committed is
        redelivered, and the delivery table skips what was already sent."""
        clients = await until_connected(self._connect, "mailer", self._stopping)
        if clients is None:
            return
        self._consumer, self._producer = clients
        watchdog = asyncio.create_task(self._watch_topics(), name="mailer-topic-watchdog")
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume()
                except BrokerReset as exc:
                    log.warning("the broker lost %s (restarted?); recreating them", exc)
                    await self._recover()
                except JoinStalled:
                    log.warning("no partitions for %.0fs; joining afresh", JOIN_STALL_SECONDS)
                    await self._disconnect()
                    clients = await until_connected(self._connect, "mailer", self._stopping)
                    if clients is None:
                        return
                    self._consumer, self._producer = clients
        finally:
            watchdog.cancel()
            try:
                await asyncio.wait({watchdog})  # a cancel of this task still comes through
            finally:
                await self._disconnect()

    async def _consume(self) -> None:
        """The poll loop, until stopping (returns) or a broker reset (raises)."""
        assert self._consumer is not None and self._producer is not None
        consumer = self._consumer
        dispatcher = Dispatcher(
            self._settings,
            self._history,
            self._smtp,
            Redirector(self._producer, self._settings.retry_delays_seconds),
            StatusAnnouncer(self._producer),
        )
        self.running = True
        log.info(
            "mailer consuming %s as group %r", EMAIL_CODES_TOPICS_PATTERN, self._settings.group_id
        )
        backoff = Backoff()
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=self._settings.batch_size)
            if batch:  # in flight from here, before any await: a revocation now waits
                self._settled.clear()
            try:
                await self._round(batch, dispatcher, backoff)
            finally:
                self._settled.set()

    async def _round(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        dispatcher: Dispatcher,
        backoff: Backoff,
    ) -> None:
        """One poll's worth: checks, then the batch sent and committed."""
        assert self._consumer is not None
        consumer = self._consumer
        await self._measure_lag()
        if self._reset.is_set():
            raise BrokerReset(", ".join(self._own_topics))
        if not self.joined and time.monotonic() - self._unjoined_since > JOIN_STALL_SECONDS:
            raise JoinStalled
        if self._reread and consumer.assignment():
            # Fetched from positions that predate the restart: drop, re-read.
            await self._reread_from_start()
            return
        if not batch:
            return
        try:
            await self._process(batch, dispatcher)
            backoff.reset()
        except BrokerReset:
            raise
        except Exception:
            # Nothing is lost: rewind to the committed offsets and go again; what was
            # already sent is in the delivery table and will be skipped.
            log.exception("processing a batch failed; retrying in %.1fs", backoff.delay)
            MAILS.labels("batch_error").inc()
            await backoff.wait(self._stopping)
            await self._rewind()

    async def _watch_topics(self) -> None:
        """Every TOPIC_CHECK_SECONDS: if the topics the mailer writes are gone or were
        re-created by a restarted broker, make them again at once (getmany() may be stuck
        in a group rejoin a while) and have the poll loop recover. It never dies: a check
        that fails or hangs is simply tried again."""
        while True:
            await asyncio.sleep(TOPIC_CHECK_SECONDS)
            producer = self._producer
            if producer is None or self._reset.is_set() or not self._known:
                continue
            try:
                changed = await asyncio.wait_for(changed_topics(producer, self._known), 10)
                if changed:
                    self._reset.set()
                    # Dead letters are never deleted: a missing DLQ is only created again.
                    await recreate_topics(self._kafka, *(changed - {EMAIL_CODES_DLQ_TOPIC}))
            except Exception as exc:  # the broker may be away; try again next time
                log.debug("checking the mailer's topics failed: %r", exc)

    async def _recover(self) -> None:
        """After the broker came back empty: a new producer (its metadata and batches
        predate the restart) and the topics it writes; the consumer looks for topics now
        and rereads what it had not committed (the table skips what was sent). The same
        consumer is kept: aiokafka sends no LeaveGroup at generation 0 (Tansu's first), so
        a new member would wait for the old one's session to time out."""
        assert self._consumer is not None
        self.running = False
        # No _await_join() here: a re-subscription that changes nothing rebalances
        # nothing; if it does, the listener's revocation starts the join clock.
        # Partitions waiting for a retry to fall due are resumed, not just forgotten:
        # without a rebalance they would stay paused. Read again, they wait afresh.
        held = set(self._timers)
        self.forget(held)
        for tp in held & self._consumer.assignment():
            self._consumer.resume(tp)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await close_quietly(producer, "the mailer's producer")
        self._producer = await until_connected(self._new_producer, "mailer", self._stopping)
        if self._producer is None:
            return
        self._reset.clear()
        # A pattern subscription notices new topics at its next metadata refresh: now.
        self._consumer.subscribe(pattern=EMAIL_CODES_TOPICS_PATTERN, listener=_Rebalance(self))
        # Not to the committed offsets: a commit in flight when the broker died can land on
        # the restarted one, naming offsets of the lost log (seen in CI: the 3 emails at the
        # new log's offsets 0-2 waited for a republication, as the commit said 3). The new
        # log is all new; what of it was already sent, the table skips.
        self._reread = True

    async def _reread_from_start(self) -> None:
        """Every assigned partition from its start, and that start committed, so that a
        later rebalance does not go back to a stale commit."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        try:
            starts = await self._consumer.beginning_offsets(list(assigned))
            await self._consumer.seek_to_beginning(*assigned)
            await self._consumer.commit({tp: offset for tp, offset in starts.items()})
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            log.warning("re-reading after the broker reset failed (%s); trying again", exc)
            return
        self._reread = False
        log.info("re-reading %d partition(s) from their start after the broker reset", len(starts))

    async def _rewind(self) -> None:
        """Back to the committed offsets, or to the start where nothing is committed yet (a
        new group, a restarted broker): seek_to_committed() leaves those alone."""
        assert self._consumer is not None
        if not self._consumer.assignment():
            return
        committed = await self._consumer.seek_to_committed()
        fresh = [tp for tp, offset in committed.items() if not offset]
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)

    async def _disconnect(self) -> None:
        self.running = False
        self.left_group()
        self.forget(set(self._timers))
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        try:
            if consumer is not None:  # commits nothing more; leaves the group
                await close_quietly(consumer, "the mailer's consumer")
        finally:
            if producer is not None:
                await close_quietly(producer, "the mailer's producer")

    async def _process(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], dispatcher: Dispatcher
    ) -> None:
        assert self._consumer is not None
        now = time.time()
        offsets: dict[TopicPartition, int] = {}
        records: list[ConsumerRecord] = []
        for tp, fetched in batch.items():
            due = fetched if tp.topic == EMAIL_CODES_TOPIC else self._due(tp, fetched, now)
            if due:
                offsets[tp] = due[-1].offset + 1
                records += due
        await dispatcher.dispatch(records)
        if not offsets:  # every record fetched was a retry not yet due
            return
        # Offsets read from a broker that has since restarted must not be committed to it.
        if self._reset.is_set():
            raise BrokerReset(", ".join(self._own_topics))
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved a partition without waiting for this batch (it ran over
            # SETTLE_SECONDS, or our membership had lapsed): its new owner gets these
            # records again, and skips those recorded here. Not worth stopping for.
            log.warning("commit refused after a rebalance: %s", exc)

    def _due(
        self, tp: TopicPartition, records: list[ConsumerRecord], now: float
    ) -> list[ConsumerRecord]:
        """The records whose time has come; the partition waits, paused, for the rest."""
        for i, record in enumerate(records):
            wait = not_before(record) - now
            if wait > 0:
                self._hold(tp, record.offset, wait)
                return records[:i]
        return records

    def _hold(self, tp: TopicPartition, offset: int, delay: float) -> None:
        assert self._consumer is not None
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        if timer := self._timers.pop(tp, None):
            timer.cancel()
        self._timers[tp] = asyncio.get_running_loop().call_later(delay, self._release, tp)

    def _release(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.resume(tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the pause timers of partitions that are no longer ours."""
        for tp in partitions:
            if timer := self._timers.pop(tp, None):
                timer.cancel()

    async def _measure_lag(self) -> None:
        """`mailer_consumer_lag`, per assigned partition, at most once a second."""
        assert self._consumer is not None
        if time.monotonic() < self._next_lag_check:
            return
        self._next_lag_check = time.monotonic() + 1.0
        reported: set[tuple[str, str]] = set()
        for tp in self._consumer.assignment():
            found = await end_and_position(self._consumer, tp)
            if found is None:
                continue  # not fetched yet, or mid-rebalance
            end, position = found
            labels = (tp.topic, str(tp.partition))
            LAG.labels(*labels).set(max(0, end - position))
            reported.add(labels)
        for labels in self._lag_reported - reported:  # partitions no longer measured here
            if shared_metrics():
                # Workers share the values (common/metrics.py), where a series cannot be
                # removed, and a new one each time would pile up: zero, which the new
                # owner's next, more recent, value replaces.
                LAG.labels(*labels).set(0)
            else:
                LAG.remove(*labels)
        self._lag_reported = reported
