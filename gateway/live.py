"""Live delivery of events to the streams connected to this process.

The events table is the source of truth (inbox.events); a notification only says
"user X has new events". A woken user's feed then reads the table for ids greater
than the smallest id its streams have sent, and hands each stream what is new to it.
Trusting the notification's content instead would skip events whose notification
was lost (Redis down, a process that does not publish, such as the CLI) and would
deliver an event committed out of order twice or never; reading "id > last sent"
from the table gives each stream every committed event once, in id order (see
inbox.events for why no smaller id of a user can commit after a larger one).

Notifications come from three places:
- this process, after a commit (ingest batches, status callbacks, API writes):
  :meth:`EventHub.notify`, which wakes local feeds at once and, with Redis
  configured, publishes the user ids to one channel shared by every gateway process;
- the Redis subscriber task, for commits in other gateway processes;
- a poll of the table every ``events.poll_interval_s``, for writers that publish
  nothing (the CLI, dramatiq workers, a second process on the same SQLite file
  without Redis).

One channel carries every user's notifications (a list of user ids per message);
each process ignores users without local streams. Per-user channels would cost a
SUBSCRIBE per connecting user and one Redis channel per online user; a channel
message is a few dozen bytes and a set lookup per user id, which scales to many
thousands of notifications a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from redis.exceptions import RedisError

from config import Settings
from config.settings import EventsSettings
from inbox import events
from inbox.db import Database

log = logging.getLogger(__name__)

#: Rows read per query when a feed catches up.
PAGE = 500
#: Bytes of events waiting for one stream beyond which it is dropped: a client that
#: reads too slowly (or not at all) must not make the process hold its backlog.
#: Nothing is lost: the client reconnects with Last-Event-ID and replays what it
#: missed from the events table, which is the source of truth.
MAX_QUEUED_BYTES = 1 << 20
_REDIS_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_MAX_USERS_PER_PUBLISH = 1000


class TooManyStreams(Exception):
    """Raised by :meth:`EventHub.open` when the user already has
    ``events.max_clients_per_user`` streams open on this process."""


class HubClosed(Exception):
    """Raised by :meth:`EventHub.open` once the process is shutting down."""


class HubFull(Exception):
    """Raised by :meth:`EventHub.open` when this process already holds
    ``events.max_streams`` streams (of all users)."""


#: Put on a stream's queue to end it: the hub is closing, or the stream fell behind.
CLOSE: Any = object()
#: Put on every stream's queue every few seconds: the stream looks whether its client
#: went away (aiohttp does not cancel a handler when the connection drops) and sends a
#: keep-alive when due. One task for all streams instead of a timer per stream wait.
TICK: Any = object()
#: How often streams are ticked.
TICK_S = 5.0


def frame(event_id: int, kind: str, data: object) -> bytes:
    """One event in the text/event-stream format. json.dumps escapes newlines, so the
    data is always one line."""
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {kind}\ndata: {body}\n\n".encode()


@dataclass(eq=False)
class Stream:
    """One connected client. ``queue`` holds encoded events to send, :data:`TICK` or
    :data:`CLOSE`; take from it with :meth:`get` / :meth:`get_nowait`, which keep
    ``queued_bytes`` (what the events waiting take) up to date.

    ``on_drop`` is called when the stream falls too far behind: its handler is most
    likely blocked writing to a client that stopped reading, and must be woken (the
    route aborts the connection)."""

    user_id: str
    cursor: int
    on_drop: Callable[[], None] | None = None
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    closed: bool = False
    queued_bytes: int = 0

    def offer(self, batch: list[tuple[int, bytes]]) -> bool:
        """Queue the events of ``batch`` (id, encoded frame) this stream has not sent.
        False when that would put it over :data:`MAX_QUEUED_BYTES`: the stream is then
        dropped (its backlog freed, ``on_drop`` called) and must leave the hub."""
        if self.closed or not batch or batch[-1][0] <= self.cursor:
            return True
        # One item per batch: a thousand streams of one user wake once each per change.
        chunk = b"".join(f for i, f in batch if i > self.cursor)
        if self.queued_bytes + len(chunk) > MAX_QUEUED_BYTES:
            self._drop()
            return False
        self.queue.put_nowait(chunk)
        self.queued_bytes += len(chunk)
        self.cursor = batch[-1][0]
        return True

    async def get(self) -> Any:
        return self._taken(await self.queue.get())

    def get_nowait(self) -> Any:
        return self._taken(self.queue.get_nowait())

    def _taken(self, item: Any) -> Any:
        if isinstance(item, bytes):
            self.queued_bytes -= len(item)
        return item

    def end(self) -> None:
        """End after what is queued has been sent (shutdown)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(CLOSE)

    def _drop(self) -> None:
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0
        self.queue.put_nowait(CLOSE)
        if self.on_drop is not None:
            self.on_drop()


class _Feed:
    """The streams of one user on this process, and the one task that reads the
    table for them all (1,000 streams of one user cost one query per change)."""

    def __init__(self, hub: EventHub, user_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self.streams: set[Stream] = set()
        self.task: asyncio.Task[None] | None = None
        self.again = False

    def kick(self) -> None:
        if self.task is not None:
            # Reading already: read once more when done, so that a commit made after
            # the running query started is not left waiting for the next change.
            self.again = True
            return
        self.task = asyncio.create_task(self._run(), name=f"events-feed-{self.user_id}")

    async def _run(self) -> None:
        try:
            while True:
                self.again = False
                # Only the streams present when the read starts get its rows: a stream
                # that joins meanwhile (with an older cursor) triggers another read.
                streams = [s for s in self.streams if not s.closed]
                if not streams:
                    return
                after = min(s.cursor for s in streams)
                try:
                    batch = await self.hub.read(self.user_id, after)
                except Exception:  # the database is down: retry shortly
                    log.exception("reading events failed; retrying")
                    await asyncio.sleep(1.0)
                    self.again = True
                    continue
                # Encoded once for all the user's streams.
                encoded = [(e.id, frame(e.id, e.kind, e.data)) for e in batch]
                for stream in streams:
                    if not stream.offer(encoded):
                        # Its slot is free at once, whenever its handler notices.
                        self.hub.close(stream)
                if len(batch) >= PAGE:
                    self.again = True
                if not self.again:
                    return
        finally:
            self.task = None
            if not self.streams:
                self.hub.forget(self)


class EventHub:
    """Connected streams of this process, keyed by user, and the Redis fan-out."""

    def __init__(self, settings: Settings, db: Database, pool: ThreadPoolExecutor) -> None:
        self._settings = settings.events
        self._redis_url = settings.redis.url
        self._db = db
        self._pool = pool
        self._feeds: dict[str, _Feed] = {}
        self._open = 0
        # Tells this process's own messages apart on the shared channel.
        self._origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._to_publish: set[str] = set()
        self._publish_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: aioredis.Redis | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    def retune(self, settings: EventsSettings) -> None:
        """Take reloaded stream limits (max_streams, max_clients_per_user); open
        streams stay open. The intervals of the running tasks need a restart."""
        self._settings = settings

    # --- streams ---------------------------------------------------------------------

    @property
    def stream_count(self) -> int:
        """Streams registered on this process (a dropped one no longer counts)."""
        return self._open

    def open(self, user_id: str, cursor: int, on_drop: Callable[[], None] | None = None) -> Stream:
        """Register a stream that has sent everything up to ``cursor``; it is handed
        what is newer at once. ``on_drop``: see :class:`Stream`."""
        if self._closing:
            raise HubClosed("the gateway is shutting down")
        if self._open >= self._settings.max_streams:
            raise HubFull(
                f"this server holds its maximum of {self._settings.max_streams} event streams"
            )
        feed = self._feeds.get(user_id)
        if feed is None:
            feed = self._feeds[user_id] = _Feed(self, user_id)
        if len(feed.streams) >= self._settings.max_clients_per_user:
            raise TooManyStreams(
                f"at most {self._settings.max_clients_per_user} event streams per user "
                "may be open at once"
            )
        stream = Stream(user_id, cursor, on_drop)
        feed.streams.add(stream)
        self._open += 1
        feed.kick()
        return stream

    def close(self, stream: Stream) -> None:
        """Unregister ``stream``; harmless when it already is."""
        stream.closed = True
        feed = self._feeds.get(stream.user_id)
        if feed is None or stream not in feed.streams:
            return
        feed.streams.remove(stream)
        self._open -= 1
        if not feed.streams and feed.task is None:
            del self._feeds[stream.user_id]

    def forget(self, feed: _Feed) -> None:
        if self._feeds.get(feed.user_id) is feed and not feed.streams:
            del self._feeds[feed.user_id]

    async def read(self, user_id: str, after: int) -> list[events.Event]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, events.list_after, self._db, user_id, after, PAGE
        )

    # --- notifications ---------------------------------------------------------------

    def notify(self, user_ids: Iterable[str]) -> None:
        """After a commit that wrote events for ``user_ids``: wake their local streams
        and tell the other processes. Never blocks: the publish runs on its own task."""
        wanted = set(user_ids)
        if not wanted:
            return
        self._wake(wanted)
        if self._redis_url and not self._closing:
            self._to_publish |= wanted
            self._publish_wake.set()

    def _wake(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            feed = self._feeds.get(user_id)
            if feed is not None:
                feed.kick()

    def _wake_all(self) -> None:
        self._wake(list(self._feeds))

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll(), name="events-poll"))
        self._tasks.append(asyncio.create_task(self._tick(), name="events-tick"))
        if not self._redis_url:
            return
        self._redis = aioredis.Redis.from_url(self._redis_url)
        self._tasks.append(asyncio.create_task(self._publisher(), name="events-publish"))
        self._tasks.append(asyncio.create_task(self._subscriber(), name="events-subscribe"))
        # Streams opened from now on hear of other processes' commits; if Redis is
        # down the subscriber keeps trying and the poll covers the gap meanwhile.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5.0)

    def end_streams(self) -> None:
        """Shutdown, first step: refuse new streams and end the open ones, so that
        their handlers return and the server does not wait for them."""
        self._closing = True
        for feed in list(self._feeds.values()):
            for stream in list(feed.streams):
                stream.end()

    async def stop(self) -> None:
        self.end_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- background tasks ------------------------------------------------------------

    async def _tick(self) -> None:
        interval = min(TICK_S, self._settings.keepalive_s)
        while True:
            await asyncio.sleep(interval)
            for feed in list(self._feeds.values()):
                for stream in feed.streams:
                    if not stream.closed:
                        stream.queue.put_nowait(TICK)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._settings.poll_interval_s
        # A gateway may start while the database is down (the webhook spool covers
        # that): keep trying for the starting point instead of ending the task.
        while True:
            try:
                newest = await loop.run_in_executor(self._pool, events.newest_id, self._db)
                break
            except sa.exc.SQLAlchemyError:
                log.warning("events: database not reachable yet; polling will start later")
                await asyncio.sleep(interval)
        # Each poll reads back over the previous interval as well: on PostgreSQL an
        # event of another user may commit after a larger id was already seen.
        marks = [newest, newest]
        while True:
            await asyncio.sleep(interval)
            if not self._feeds:
                continue
            try:
                found = await loop.run_in_executor(
                    self._pool, events.users_after, self._db, marks[0]
                )
            except Exception:  # the database is down; try next time
                log.exception("polling for events failed")
                continue
            self._wake(found)
            marks = [marks[1], max([marks[1], *found.values()])]

    async def _publisher(self) -> None:
        assert self._redis is not None
        channel = self._settings.redis_channel
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            users = sorted(self._to_publish)
            self._to_publish.clear()
            for start in range(0, len(users), _MAX_USERS_PER_PUBLISH):
                payload = json.dumps(
                    {"o": self._origin, "u": users[start : start + _MAX_USERS_PER_PUBLISH]}
                )
                try:
                    await self._redis.publish(channel, payload)
                except (RedisError, OSError) as exc:
                    # Other processes' poll still finds these events, a little later.
                    log.warning("could not publish event notifications: %s", exc)

    async def _subscriber(self) -> None:
        assert self._redis is not None
        attempt = 0
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._settings.redis_channel)
                    self._subscribed.set()
                    if attempt:
                        # Notifications sent while we were away are lost: look again.
                        self._wake_all()
                    attempt = 0
                    async for message in self._messages(pubsub):
                        self._received(message)
            except (RedisError, OSError) as exc:
                delay = _REDIS_RETRY_S[min(attempt, len(_REDIS_RETRY_S) - 1)]
                attempt += 1
                log.warning("event subscription lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    @staticmethod
    async def _messages(pubsub: Any) -> AsyncIterator[Any]:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                yield message["data"]

    def _received(self, raw: bytes | str) -> None:
        try:
            payload = json.loads(raw)
            origin, users = payload["o"], payload["u"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event notification")
            return
        if origin == self._origin or not isinstance(users, list):
            return
        self._wake(u for u in users if isinstance(u, str))


EVENT_HUB = web.AppKey("event_hub", EventHub)


def install(app: web.Application, hub: EventHub) -> None:
    """Start the hub with the app and end its streams before the server waits for
    running handlers on shutdown (aiohttp runs ``on_shutdown`` first)."""
    app[EVENT_HUB] = hub

    async def run(_app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    async def end_streams(_app: web.Application) -> None:
        hub.end_streams()

    app.cleanup_ctx.append(run)
    app.on_shutdown.append(end_streams)
