"""The enumeration floor follows a route's slowest recent answer: a branch that outlasts
the configured floor (a slow machine, a queue of hashes) holds the others back as long."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from auth_service.floors import CAP, WINDOW, AnswerFloor, AnswerFloors
from auth_service.routes import answer_no_sooner

FLOOR = 0.12
MEMORY = 600.0


def test_a_fast_answer_is_held_to_the_configured_floor() -> None:
    assert AnswerFloor("/a", FLOOR, MEMORY).hold(0.02, now=0.0) == pytest.approx(0.10)


def test_a_slow_answer_holds_the_next_ones_as_long() -> None:
    floor = AnswerFloor("/a", FLOOR, MEMORY)
    assert floor.hold(0.30, now=0.0) == 0.0  # past the floor: its own time
    assert floor.hold(0.02, now=1.0) == pytest.approx(0.28)
    assert floor.hold(0.25, now=2.0) == pytest.approx(0.05)


def test_a_slow_answer_is_forgotten_after_its_memory_or_a_window_of_answers() -> None:
    floor = AnswerFloor("/a", FLOOR, MEMORY)
    floor.hold(0.30, now=0.0)
    assert floor.hold(0.02, now=MEMORY + 1) == pytest.approx(0.10)

    floor = AnswerFloor("/b", FLOOR, MEMORY)
    floor.hold(0.30, now=0.0)
    for _ in range(WINDOW - 1):
        assert floor.hold(0.02, now=1.0) == pytest.approx(0.28)
    assert floor.hold(0.02, now=1.0) == pytest.approx(0.10)


def test_the_floor_rises_no_higher_than_its_cap() -> None:
    floor = AnswerFloor("/a", FLOOR, MEMORY)
    floor.hold(60.0, now=0.0)
    assert floor.hold(0.02, now=1.0) == pytest.approx(FLOOR * CAP - 0.02)


def test_work_that_ended_after_its_answer_holds_the_next_ones_until_it_would_end() -> None:
    floor = AnswerFloor("/a", FLOOR, MEMORY)
    floor.record(0.30, now=0.0)
    assert floor.hold(0.02, now=1.0) == pytest.approx(0.28)


def test_a_floor_of_zero_holds_nothing() -> None:
    floor = AnswerFloor("/a", 0.0, MEMORY)
    floor.hold(0.5, now=0.0)
    assert floor.hold(0.01, now=1.0) == 0.0


def test_each_route_has_its_own_floor() -> None:
    floors = AnswerFloors(FLOOR, MEMORY)
    floors["/slow"].hold(0.5, now=0.0)
    assert floors["/slow"] is floors["/slow"]
    assert floors["/fast"].hold(0.02, now=1.0) == pytest.approx(0.10)


async def test_a_route_answers_no_sooner_than_its_slowest_recent_answer() -> None:
    """Through `answer_no_sooner`, as the sign-up, resend and forgot routes use it: after
    one answer that took 0.4 s, an answer with nothing to do still takes 0.4 s. (Only a
    lower bound is asserted: a busy machine may answer later, never sooner.)"""
    app = FastAPI()
    app.state.answer_floors = AnswerFloors(0.05, MEMORY)

    @app.post("/signup")
    async def signup(request: Request, work: float) -> dict[str, str]:
        async with answer_no_sooner(request):
            await asyncio.sleep(work)
        return {"status": "accepted"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.post("/signup", params={"work": 0.4})).status_code == 200
        started = time.perf_counter()
        assert (await http.post("/signup", params={"work": 0})).status_code == 200
        assert time.perf_counter() - started >= 0.39


async def test_an_answer_is_held_until_the_work_an_earlier_one_left_would_be_done() -> None:
    """Sign-up answers before the work that depends on the address and leaves it running:
    after one whose work ended 0.4 s after its request came, an answer with nothing to do
    takes 0.4 s, so what a client sends after an answer meets none of that work."""
    app = FastAPI()
    app.state.answer_floors = AnswerFloors(0.05, MEMORY)
    left: list[asyncio.Task[None]] = []

    @app.post("/signup")
    async def signup(request: Request, work: float) -> dict[str, str]:
        async with answer_no_sooner(request) as padding:
            left.append(asyncio.create_task(asyncio.sleep(work)))
            padding.outlasted_by(left[-1])
        return {"status": "accepted"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.post("/signup", params={"work": 0.4})).status_code == 200
        await asyncio.gather(*left)
        started = time.perf_counter()
        assert (await http.post("/signup", params={"work": 0})).status_code == 200
        assert time.perf_counter() - started >= 0.39
