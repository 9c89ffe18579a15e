"""Account deletion everywhere: the database and blobs (inbox.store.delete_user), the
export archives, and the user's keys in Redis.

What Redis holds of a user, and how each goes:

- keys named ``optmsg:user:<user id>:...`` (per-user state of any feature) are
  deleted here, found with SCAN (never KEYS, which blocks the server);
- rate-limit counters are keyed by a hash of the mobile number or client IP, not by
  the user, and expire on their own within ``auth.window_s``;
- queued jobs (dramatiq messages) carry only message and export ids: each job
  finds its row gone and finishes quietly, so a queue is not searched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from config import Settings
from inbox import export, store
from inbox.blobs import BlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.ids import looks_like_id

log = logging.getLogger(__name__)

#: Every Redis key that belongs to one user starts with this, then the user id and ":".
USER_KEY_PREFIX = "optmsg:user:"


def user_key(user_id: str, name: str) -> str:
    """The Redis key ``name`` of one user: deleted with the account."""
    return f"{USER_KEY_PREFIX}{user_id}:{name}"


def delete_account(settings: Settings, db: Database, blobs: BlobStore, user_id: str) -> int:
    """Delete the user and everything of theirs; NotFound for an unknown user. Returns
    how many Redis keys went (0 without Redis).

    The database goes first: once the tokens are gone no request of the user's can
    create a key. A user already deleted (a run that lost Redis half-way) still has
    their keys looked for before NotFound is raised, so running it again finishes."""
    if not looks_like_id("usr", user_id):
        raise NotFound(f"no user {user_id}")  # also keeps glob characters out of SCAN
    try:
        store.delete_user(
            db, blobs, user_id, exports_dir=export.exports_dir(Path(settings.storage.blob_dir))
        )
    except NotFound:
        if settings.redis.url:
            purge_user_keys(settings.redis.url, user_id)
        raise
    if not settings.redis.url:
        return 0
    return purge_user_keys(settings.redis.url, user_id)


def purge_user_keys(redis_url: str, user_id: str) -> int:
    """Delete the user's keys from Redis. Raises redis.RedisError when Redis cannot be
    reached: the caller reports it (the database part is done; running the deletion
    again finishes it, since a deleted user's keys are found by the same prefix)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=user_key(user_id, "*"), count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()
