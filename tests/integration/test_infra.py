"""The operator tooling on real parts: `python -m infra.migrate` on fresh databases, and the
development SMTP sink receiving a real email and showing its code."""

from __future__ import annotations

import os
import smtplib
import sqlite3
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from infra.ports import free_port
from infra.smtp_sink import start_sink
from tests.support import ROOT


def migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.migrate", *args],
        cwd=ROOT,
        env={**env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrate_upgrades_every_service_then_is_a_no_op(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **{
            f"{prefix}_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{prefix.lower()}.db"
            for prefix in ("AUTH", "FILMS", "MAILER", "WEB")
        },
    }
    for _ in range(2):  # the second run finds nothing to do
        done = migrate(env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("at the newest revision") == 4
    assert {"users", "outbox", "alembic_version_auth"} <= tables(tmp_path / "auth.db")
    assert {"films", "alembic_version_films"} <= tables(tmp_path / "films.db")
    assert {"deliveries", "alembic_version_mailer"} <= tables(tmp_path / "mailer.db")
    assert {"web_sessions", "alembic_version_web"} <= tables(tmp_path / "web.db")

    just_one = migrate(
        {**env, "MAILER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/m2.db"}, "mailer_service"
    )
    assert just_one.returncode == 0 and "mailer_service" in just_one.stdout
    assert "auth_service" not in just_one.stdout

    stamped = migrate(
        {**env, "FILMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/f2.db"},
        "--stamp",
        "films_service",
    )
    assert stamped.returncode == 0 and "stamped" in stamped.stdout
    assert tables(tmp_path / "f2.db") == {"alembic_version_films"}

    wrong = migrate(env, "no_such_service")
    assert wrong.returncode == 2 and "unknown service" in wrong.stderr


def test_the_sink_prints_the_code_and_keeps_the_message(tmp_path: Path) -> None:
    port = free_port()
    lines: list[str] = []
    controller = start_sink("127.0.0.1", port, tmp_path / "mail", announce=lines.append)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Hi"
    message.set_content("Your code:\n\n    123456\n")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)
    finally:
        controller.stop()
    [line] = lines
    assert "to=b@example.com" in line and "code=123456" in line
    [saved] = (tmp_path / "mail").glob("*.eml")
    assert b"123456" in saved.read_bytes()
