"""Metrics of several workers (common/metrics.py, common/serve.py): a directory with no
earlier run's values in it, the live gauges of workers that ended dropped, and the
mailer's lag gauge kept to a fixed set of series."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from common.metrics import MULTIPROCESS_DIR, drop_dead_workers
from common.serve import shared_metrics
from mailer_service import consumer as consumer_module
from mailer_service.consumer import Mailer
from mailer_service.metrics import LAG


def test_several_workers_get_a_fresh_directory_removed_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with shared_metrics(several=True):
        made = Path(os.environ[MULTIPROCESS_DIR])
        assert made.is_dir() and not any(made.iterdir())
        (made / "counter_123.db").write_bytes(b"values")
    assert not made.exists() and MULTIPROCESS_DIR not in os.environ


def test_one_process_keeps_its_values_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with shared_metrics(several=False):
        assert MULTIPROCESS_DIR not in os.environ


@pytest.mark.parametrize("several", [True, False])
def test_the_operators_directory_loses_an_earlier_runs_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, several: bool
) -> None:
    """Whatever the worker count (prometheus_client uses the directory once it is set):
    other processes' files go, this process's own (made at import) stay."""
    (tmp_path / "counter_99999999.db").write_bytes(b"stale")
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"mine")
    (tmp_path / "README").write_text("the operator's")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    with shared_metrics(several=several):
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["README", f"counter_{os.getpid()}.db"]


def test_the_live_gauges_of_a_worker_that_ended_are_dropped(tmp_path: Path) -> None:
    """A worker stopped by a signal runs no exit handler: its live gauges stayed, and
    counted as a live worker's (the relay leader summed to 2)."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(ended.stdout)
    for name in (
        f"gauge_livesum_{dead}.db",
        f"counter_{dead}.db",
        f"gauge_livesum_{os.getpid()}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    drop_dead_workers(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"counter_{dead}.db", f"gauge_livesum_{os.getpid()}.db"]  # counts stay


class _Consumer:
    def __init__(self) -> None:
        self.partitions = {TopicPartition("mail", 0), TopicPartition("mail", 1)}

    def assignment(self) -> set[TopicPartition]:
        return self.partitions

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        return 4


def _series() -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in LAG.collect()
        for s in family.samples
    }


@pytest.mark.parametrize("shared", [False, True], ids=["one process", "several workers"])
async def test_a_partition_given_up_leaves_the_lag_gauge_without_a_new_series(
    monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """The gauge was cleared and refilled every second. Shared between workers, a cleared
    series cannot go, and each refill made a new value object that was never freed."""
    monkeypatch.setattr(consumer_module, "shared_metrics", lambda: shared)
    consumer = _Consumer()
    mailer = cast(Any, Mailer.__new__(Mailer))
    mailer._consumer, mailer._next_lag_check, mailer._lag_reported = consumer, 0.0, set()
    LAG.clear()
    await mailer._measure_lag()
    assert _series() == {("mail", "0"): 6.0, ("mail", "1"): 6.0}
    children = dict(LAG._metrics)
    consumer.partitions = {TopicPartition("mail", 0)}
    mailer._next_lag_check = 0.0
    await mailer._measure_lag()
    if shared:
        assert _series() == {("mail", "0"): 6.0, ("mail", "1"): 0.0}
        assert LAG._metrics == children  # the same series, no new ones
    else:
        assert _series() == {("mail", "0"): 6.0}
    LAG.clear()
