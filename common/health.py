"""`/healthz` (the process answers) and `/readyz` (its dependencies answer) for every service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT = 2.0


def database_check(engine: AsyncEngine) -> Check:
    async def check() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    return check


async def _run(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # a failing dependency is an answer here, not an error
        log.warning("readiness check failed: %r", exc)
        return False


def health_router(checks: Callable[[], Mapping[str, Check]]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        named = checks()
        results = await asyncio.gather(*(_run(c) for c in named.values()))
        status = {name: "ok" if ok else "down" for name, ok in zip(named, results, strict=True)}
        if all(results):
            return JSONResponse({"status": "ready", "checks": status})
        return JSONResponse(
            {"error": "not_ready", "message": "a dependency is down", "checks": status}, 503
        )

    return router
