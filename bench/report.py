"""The results: one table (printed, written to bench/results.md and into the README's
performance section) and a chart of throughput and latency percentiles (bench/results.png).
A run on PostgreSQL has files and a README block of its own (bench/results-postgres.*),
so the two tables stand side by side and neither run overwrites the other's."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import CORES, LOAD_CORE, SERVICE_CORE, Figure

HERE = Path(__file__).parent
README = HERE.parent / "README.md"


def _outputs(database: str) -> tuple[str, str, str]:
    """(the results' file stem, the README block's begin and end markers)."""
    kind = "-postgres" if database == "PostgreSQL" else ""
    return f"results{kind}", f"<!-- bench{kind}:begin -->", f"<!-- bench{kind}:end -->"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(figures: list[Figure], memory: dict[str, float]) -> str:
    lines = [
        "| figure | goal | measured | floor (same run, same core) | ratio | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        floor = f"{_number(f.floor)} ({f.floor_label})" if f.floor else "—"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "—"
        measured = f"{_number(f.measured)} {f.unit}" + (f", {f.note}" if f.note else "")
        met = "yes" if f.met else "**no**"
        lines.append(f"| {f.name} | {f.goal} | {measured} | {floor} | {ratio} | {met} |")
    if memory:  # none where only areas that start no measured service ran
        rss = ", ".join(f"{name} {mb:.0f} MB" for name, mb in memory.items())
        met = "yes" if max(memory.values()) <= 120 else "**no**"
        lines.append(f"| resident memory | each <= 120 MB | {rss} | — | — | {met} |")
    return "\n".join(lines)


def header(command: str, database: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"`{command}` on {when}, database {database}: {len(CORES)} cores, the service on core "
        f"{SERVICE_CORE}, wrk and everything else on core {LOAD_CORE}; each figure the median "
        "of alternating rounds beside its floor measured in the same run."
    )


def write(figures: list[Figure], memory: dict[str, float], command: str, database: str) -> str:
    text = header(command, database) + "\n\n" + table(figures, memory) + "\n"
    stem, begin, end = _outputs(database)
    (HERE / f"{stem}.md").write_text("# Benchmark results\n\n" + text)
    chart(figures, HERE / f"{stem}.png")
    if README.exists() and begin in README.read_text():
        readme = README.read_text()
        block = f"{re.escape(begin)}.*?{re.escape(end)}"
        readme = re.sub(block, lambda _: f"{begin}\n{text}{end}", readme, flags=re.S)
        README.write_text(readme)
    return text


def chart(figures: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = [f for f in figures if f.unit in ("req/s", "emails/s")]
    timed = [f for f in figures if f.latency is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    names = [f.name.replace(" ", "\n", 2) for f in rated]
    xs = range(len(rated))
    left.bar([x - 0.2 for x in xs], [f.measured for f in rated], width=0.4, label="measured")
    left.bar(
        [x + 0.2 for x in xs], [f.floor or 0 for f in rated], width=0.4, label="floor (same run)"
    )
    left.set_xticks(list(xs), names, fontsize=7)
    left.set_ylabel("per second")
    left.set_title("Throughput against its floor")
    left.legend()
    for label, attribute in (("p50", "p50"), ("p90", "p90"), ("p99", "p99")):
        right.plot(
            [f.name.replace(" ", "\n", 2) for f in timed],
            [getattr(f.latency, attribute) for f in timed],
            marker="o",
            label=label,
        )
    right.set_ylabel("ms")
    right.set_yscale("log")
    right.set_title("Latency percentiles under load (wrk)")
    right.tick_params(axis="x", labelsize=7)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
