"""The replayer taking over the spool slots of processes that died: real spool files
under a temporary directory, the real Twilio bridge's parsing and the real replayer,
with an ingest that records what it is handed (the store itself is covered by
test_webhook_spool.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridges.twilio import StatusUpdate, TwilioBridge
from config import Settings
from gateway.metrics import Metrics
from gateway.reload_wiring import signature_verifier
from gateway.spool_replay import Replayer, WebhookSpool, encode_sms
from inbox.errors import StoreUnavailable
from inbox.message import Inbound, IngestResult, Outcome
from inbox.spool import Spool
from tests.conftest import make_settings, twilio_form


@dataclass
class Store:
    """Stands in for the ingest pipeline: keeps what it stores, fails when told."""

    stored: list[str] = field(default_factory=list)
    fail_after: int | None = None  # stores this many more, then the database is "down"

    async def ingest(self, inbound: Inbound) -> IngestResult:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise StoreUnavailable("the database is down")
            self.fail_after -= 1
        self.stored.append(inbound.external_id)
        return IngestResult(Outcome.QUARANTINED, "unknown sender")

    async def up(self) -> bool:
        return self.fail_after != 0


async def _no_status(update: StatusUpdate) -> None:
    raise AssertionError("no status callbacks in these tests")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")


def _bridge(settings: Settings) -> TwilioBridge:
    return TwilioBridge(
        verifier=signature_verifier(settings),
        default_region=settings.optin.default_region,
        max_body_bytes=settings.http.max_webhook_bytes,
        help_reply=settings.bridges.twilio.help_reply,
    )


def _records(bridge: TwilioBridge, sids: list[str]) -> list[bytes]:
    now = datetime.now(UTC)
    return [encode_sms(bridge.reparse_sms(tuple(twilio_form(sid=s).items()), now)) for s in sids]


def _leave_orphan(settings: Settings, bridge: TwilioBridge, sids: list[str]) -> Path:
    """A process that took a slot, spooled these messages and died."""
    spool = Spool.open(settings.spool.dir, settings.spool.max_bytes)
    spool.append(_records(bridge, sids))
    spool.close()
    return spool.path


async def test_an_orphan_adopted_again_after_its_names_were_reused_is_replayed_whole(
    settings: Settings,
) -> None:
    bridge = _bridge(settings)
    store = Store()
    own = WebhookSpool(settings.spool)
    await own.open()  # takes instance-0
    replayer = Replayer(
        spool=own,
        bridge=bridge,
        ingest=store.ingest,
        commands=None,
        apply_status=_no_status,
        database_up=store.up,
        metrics=Metrics(),
    )
    try:
        # A dead process left 20 messages; the database goes away after 10 of them.
        first = [f"SM{n:032d}" for n in range(20)]
        slot = _leave_orphan(settings, bridge, first)
        store.fail_after = 10
        assert await replayer.replay_all() is False
        assert store.stored == first[:10]

        # Another process drains that slot meanwhile; later a new process takes the
        # empty slot (its first segment gets the same name again), spools 15
        # messages and dies too.
        other = Spool.adopt_orphans(
            settings.spool.dir, settings.spool.max_bytes, exclude=own.spool.path
        )  # type: ignore[union-attr]
        assert [s.path for s in other] == [slot]
        for segment in other[0].sealed():
            other[0].remove(segment)
        other[0].close()
        second = [f"SM{n:032d}" for n in range(100, 115)]
        assert _leave_orphan(settings, bridge, second) == slot

        store.fail_after = None
        assert await replayer.replay_all() is True
        # All 15, none skipped as "already replayed" under the reused name.
        assert store.stored[10:] == second
    finally:
        await own.close()
