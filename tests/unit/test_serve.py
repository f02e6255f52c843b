"""The workers' shared metrics directory (common/serve.py): empty at start, ours removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.metrics import MULTIPROCESS_DIR
from common.serve import shared_metrics


def test_a_fresh_directory_for_the_workers_is_made_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with shared_metrics():
        made = Path(os.environ[MULTIPROCESS_DIR])
        assert made.is_dir() and not any(made.iterdir())
        (made / "counter_123.db").write_bytes(b"values")
    assert not made.exists() and MULTIPROCESS_DIR not in os.environ


def test_the_operators_directory_is_emptied_of_an_earlier_runs_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values an earlier run left there would be merged into this one's."""
    (tmp_path / "counter_99.db").write_bytes(b"stale")
    (tmp_path / "README").write_text("the operator's")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    with shared_metrics():
        assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
    assert os.environ[MULTIPROCESS_DIR] == str(tmp_path) and tmp_path.is_dir()
