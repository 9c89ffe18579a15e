"""Two gateways and two workers on PostgreSQL and Redis lose nothing and store nothing
twice while a gateway and a worker are killed with SIGKILL and Redis restarts (issue
#8, "Chaos and load", at small scale; ``bench/chaos.py`` runs the full scale).

One scenario, run once for the module (tests/e2e/cluster.py): 300 signed SMS
webhooks, 30 MMS webhooks with 2 media each (on a fake media host that takes 0.2 s
per media) and 100 emails, spread over both gateways and resent until acknowledged.
After 10 % of them are acknowledged gateway 0 is killed (and started again a second
later), after 30 % a worker with a media fetch in hand, after 50 % Redis is
restarted with its queues lost.
The tests then read the PostgreSQL database and the blob directory.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import PG_ADMIN_URL, _port_open, missing_service
from tests.e2e.cluster import (
    ChaosResult,
    Cluster,
    ClusterError,
    Scale,
    create_pg_database,
    drop_pg_database,
    run_chaos,
)

pytestmark = pytest.mark.slow

SCALE = Scale(sms=300, mms=30, media_per_mms=2, emails=100)
# Whatever a fault cost (a job lost with Redis waits for the media sweeper), the
# system must be consistent again this soon after the last fault.
RECOVERY_BOUND_S = 45.0
SETTINGS = {
    # The media sweeper, which finds jobs lost with Redis, at test pace: every 2 s,
    # for media pending over 2 x the fetch timeout + 1 s.
    "OPTMSG_WORKER__SWEEP_INTERVAL_S": "2",
    "OPTMSG_WORKER__SWEEP_GRACE_S": "1",
    "OPTMSG_BRIDGES__TWILIO__MEDIA_TIMEOUT_S": "3",
}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, pg_url_module: str) -> ChaosResult:
    if shutil.which("redis-server") is None:
        missing_service("redis-server", "the redis-server binary is not installed")
    cluster = Cluster(tmp_path_factory.mktemp("chaos"), pg_url_module, settings=SETTINGS)
    try:
        cluster.set_up()
        cluster.start()
        result = asyncio.run(run_chaos(cluster, SCALE, settle_timeout_s=RECOVERY_BOUND_S))
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        cluster.stop()
    print(f"\nchaos run: {result.summary()}")
    # The run only proves something if every fault landed while traffic was flowing.
    assert [f.kind for f in result.faults] == ["gateway", "worker", "redis"]
    assert all(f.acknowledged_before < SCALE.total for f in result.faults), result.summary()
    assert result.ledger.failed_attempts, "no client noticed the gateway going down"
    worker_fault = result.faults[1]
    assert worker_fault.fetches_in_flight, "the worker was killed with no fetch in hand"
    return result


def test_no_message_was_refused(chaos: ChaosResult) -> None:
    assert not chaos.ledger.refused, list(chaos.ledger.refused.items())[:5]
    assert chaos.acknowledged == SCALE.total


def test_every_acknowledged_message_is_stored(chaos: ChaosResult) -> None:
    lost = {kind: keys[:5] for kind, keys in chaos.verdict.lost.items() if keys}
    assert not lost, f"acknowledged but not stored: {lost}; {chaos.summary()}"


def test_no_message_is_stored_twice_or_unasked(chaos: ChaosResult) -> None:
    assert not chaos.verdict.duplicated, list(chaos.verdict.duplicated.items())[:5]
    assert not chaos.verdict.unexpected, chaos.verdict.unexpected[:5]
    assert sum(chaos.state.twilio.values()) + sum(chaos.state.email.values()) == SCALE.total


def test_every_attachment_is_stored_once(chaos: ChaosResult) -> None:
    assert not chaos.verdict.attachment_problems, chaos.verdict.attachment_problems[:5]
    assert len(chaos.state.attachments) == SCALE.mms * SCALE.media_per_mms


def test_the_system_is_consistent_soon_after_the_last_fault(chaos: ChaosResult) -> None:
    assert chaos.consistent, chaos.summary()
    assert chaos.recovery_seconds <= RECOVERY_BOUND_S
    assert chaos.state.raw_pending == 0


@pytest.fixture(scope="module")
def pg_url_module() -> Iterator[str]:
    """A fresh PostgreSQL database for the module, dropped afterwards."""
    if not _port_open("127.0.0.1", 5432):
        missing_service("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    try:
        url = create_pg_database(PG_ADMIN_URL)
    except ClusterError as exc:
        missing_service("PostgreSQL", str(exc))
    try:
        yield url
    finally:
        drop_pg_database(PG_ADMIN_URL, url)
