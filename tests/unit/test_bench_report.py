"""The benchmark's report: a run on PostgreSQL fills its own README block and files, and
leaves the SQLite run's alone (and the other way round)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.harness import Figure

README = """intro
<!-- bench:begin -->
old sqlite table
<!-- bench:end -->
between
<!-- bench-postgres:begin -->
old postgres table
<!-- bench-postgres:end -->
after
"""


def figure(measured: float) -> Figure:
    return Figure(name="films GET", goal=">= 0.5x", measured=measured, unit="req/s", met=True)


@pytest.mark.parametrize(
    ("database", "mine", "other", "stem"),
    [
        ("PostgreSQL", "old postgres table", "old sqlite table", "results-postgres"),
        ("SQLite", "old sqlite table", "old postgres table", "results"),
    ],
)
def test_each_database_writes_its_own_block_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, mine: str, other: str, stem: str
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "HERE", tmp_path)
    monkeypatch.setattr(report, "chart", lambda _figures, path: path.write_bytes(b"png"))
    text = report.write([figure(1234.0)], {"auth idle": 99.0}, "python -m bench", database)
    after = readme.read_text()
    assert mine not in after and other in after and text in after
    assert "1,234 req/s" in text and f"database {database}" in text
    assert after.startswith("intro\n") and "\nbetween\n" in after and after.endswith("after\n")
    assert (tmp_path / f"{stem}.md").read_text().endswith(text)
    assert (tmp_path / f"{stem}.png").exists()
