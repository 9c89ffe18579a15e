"""Liveness, readiness and metrics endpoints for operators and load balancers."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.keys import DATABASE, METRICS, READ_POOL, SETTINGS, SPOOL
from inbox.db import Database
from inbox.migrate import is_current


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def _check_database(db: Database) -> str | None:
    try:
        with db.read.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if not is_current(db):
            return "schema is not at the latest migration"
    except sa.exc.SQLAlchemyError as exc:
        return f"unreachable ({type(exc).__name__})"
    return None


def _check_redis(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    return None


async def readyz(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    pool = request.app[READ_POOL]
    checks: dict[str, str] = {}
    db_error = await loop.run_in_executor(pool, _check_database, request.app[DATABASE])
    checks["database"] = db_error or "ok"
    redis_url = request.app[SETTINGS].current.redis.url
    if redis_url:
        redis_error = await loop.run_in_executor(pool, _check_redis, redis_url)
        checks["broker"] = redis_error or "ok"
    else:
        checks["broker"] = "ok (in-process)"
    spool = request.app[SPOOL]
    spooling = spool.spool is not None and not spool.full
    if spool.spool is None:
        checks["spool"] = "ok (off)"
    else:
        state = "full" if spool.full else "ok"
        checks["spool"] = f"{state} ({spool.pending} pending)"
    ready = all(v.startswith("ok") for v in checks.values())
    # Without the database, webhooks are still acknowledged from the spool: a load
    # balancer must keep sending them here, or they reach no gateway at all.
    degraded = (
        not ready
        and spooling
        and all(v.startswith("ok") for k, v in checks.items() if k != "database")
    )
    status = "ready" if ready else "degraded" if degraded else "not ready"
    return web.json_response(
        {"status": status, "checks": checks}, status=200 if ready or degraded else 503
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
