"""The in-process token cache and the batched record of token use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.settings import DatabaseSettings
from gateway.accounts import TokenCache, TokenUse, flush_token_use
from inbox import store
from inbox.db import open_database

ADA = store.TokenOwner("usr_ada", "tok_ada1", None, suspended=False)
ADA2 = store.TokenOwner("usr_ada", "tok_ada2", None, suspended=False)
BOB = store.TokenOwner("usr_bob", "tok_bob1", None, suspended=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_owner_is_kept_for_the_ttl_only() -> None:
    clock = Clock()
    cache = TokenCache(5.0, clock=clock)
    cache.put("h1", ADA)
    clock.now += 4.9
    assert cache.get("h1") == ADA
    clock.now += 0.2
    assert cache.get("h1") is None


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = TokenCache(0.0)
    cache.put("h1", ADA)
    assert cache.get("h1") is None


def test_forgetting_a_token_leaves_the_users_other_tokens() -> None:
    cache = TokenCache(5.0)
    cache.put("h1", ADA)
    cache.put("h2", ADA2)
    cache.forget_token("tok_ada1")
    assert cache.get("h1") is None
    assert cache.get("h2") == ADA2


def test_forgetting_a_user_drops_all_their_tokens_and_no_one_elses() -> None:
    cache = TokenCache(5.0)
    for digest, owner in (("h1", ADA), ("h2", ADA2), ("h3", BOB)):
        cache.put(digest, owner)
    cache.forget_user("usr_ada")
    assert cache.get("h1") is None and cache.get("h2") is None
    assert cache.get("h3") == BOB


def test_the_cache_is_bounded_dropping_the_oldest_first() -> None:
    cache = TokenCache(5.0, max_entries=2)
    cache.put("h1", ADA)
    cache.put("h2", ADA2)
    cache.put("h3", BOB)
    assert cache.get("h1") is None
    assert cache.get("h3") == BOB


def test_noted_uses_keep_the_latest_per_token_until_taken() -> None:
    uses = TokenUse()
    first, later = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    uses.note("tok_1", first)
    uses.note("tok_1", later)
    assert uses.take() == {"tok_1": later}
    assert uses.take() == {}


def test_uses_that_could_not_be_written_are_kept_for_the_next_flush(tmp_path: Path) -> None:
    db = open_database(DatabaseSettings(url=f"sqlite:///{tmp_path / 'none.db'}"))
    noted = TokenUse()
    when = datetime(2026, 12, 2, tzinfo=UTC)
    noted.note("tok_1", when)
    try:
        with pytest.raises(Exception, match="no such table"):
            flush_token_use(noted, db)  # not migrated: the write fails
    finally:
        db.dispose()
    assert noted.take() == {"tok_1": when}


def test_refreshing_an_owner_keeps_its_expiry() -> None:
    clock = Clock()
    cache = TokenCache(5.0, clock=clock)
    cache.put("h1", ADA)
    clock.now += 4.0
    used = store.TokenOwner("usr_ada", "tok_ada1", datetime(2026, 12, 2, tzinfo=UTC))
    cache.refresh("h1", used)
    assert cache.get("h1") == used
    clock.now += 1.1
    assert cache.get("h1") is None


def test_refreshing_an_unknown_token_caches_nothing() -> None:
    cache = TokenCache(5.0)
    cache.refresh("h1", ADA)
    assert cache.get("h1") is None


def test_a_lookup_that_began_before_a_revocation_is_not_cached() -> None:
    cache = TokenCache(5.0)
    since = cache.generation  # the lookup starts
    cache.forget_token("tok_ada1")  # meanwhile the token is revoked
    cache.put("h1", ADA, since)  # the lookup ends with the (stale) owner
    assert cache.get("h1") is None


def test_a_lookup_with_no_revocation_meanwhile_is_cached() -> None:
    cache = TokenCache(5.0)
    since = cache.generation
    cache.put("h1", ADA, since)
    assert cache.get("h1") == ADA
