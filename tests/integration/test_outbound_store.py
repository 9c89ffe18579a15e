"""Outbound messages in the store: pending, handed over, statuses only forward."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from bridges.twilio import StatusUpdate
from config import Settings
from gateway.outbound import apply_status, create_sms
from inbox import outbound
from inbox.addresses import E164
from inbox.db import Database
from inbox.models import messages_t, sms_opt_outs_t
from optin import trust
from tests.integration.helpers import inbound, make_user, run_batch

USER_NUMBER = "+14155550199"
FRIEND = E164("+14155550100")


@pytest.fixture
def user_id(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=USER_NUMBER)


def status_of(db: Database, message_id: str) -> tuple[str, int | None]:
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(messages_t.c.status, messages_t.c.error_code).where(
                messages_t.c.id == message_id
            )
        ).one()
    return row.status, row.error_code


def handed_over(db: Database, settings: Settings, user_id: str, sid: str) -> str:
    message = create_sms(settings, db, user_id, FRIEND, "hello")
    with db.write.begin() as conn:
        assert outbound.mark_handed_over(conn, message.message_id, sid, "queued")
    return message.message_id


def test_a_new_message_is_pending_in_sent_from_the_users_number(
    db: Database, settings: Settings, user_id: str
) -> None:
    message = create_sms(settings, db, user_id, FRIEND, "hello")
    assert (message.sender, message.recipient, message.status) == (USER_NUMBER, FRIEND, "pending")
    with db.read.connect() as conn:
        row = conn.execute(sa.select(messages_t)).one()
    assert (row.folder, row.direction) == ("sent", "outbound")


def test_sending_trusts_the_recipient(db: Database, settings: Settings, user_id: str) -> None:
    create_sms(settings, db, user_id, FRIEND, "hello")
    entry = trust.get(db, user_id, FRIEND)
    assert (entry.verdict, entry.source) == (trust.TrustVerdict.TRUSTED, "sent_to")


def test_auto_trust_can_be_switched_off(db: Database, settings: Settings, user_id: str) -> None:
    off = settings.model_copy(
        update={"optin": settings.optin.model_copy(update={"auto_trust_sent_to": False})}
    )
    create_sms(off, db, user_id, FRIEND, "hello")
    assert trust.list_entries(db, user_id) == []


def test_a_recipient_who_texted_stop_is_refused_until_start(
    db: Database, settings: Settings, user_id: str
) -> None:
    stop = dataclasses.replace(
        inbound("SMstop", sender=FRIEND, to=USER_NUMBER, text="STOP"), keyword="stop"
    )
    run_batch(db, [stop])
    with pytest.raises(outbound.SendRefused, match="STOP"):
        create_sms(settings, db, user_id, FRIEND, "hello")
    with db.write.begin() as conn:
        conn.execute(sms_opt_outs_t.delete())
    assert create_sms(settings, db, user_id, FRIEND, "hello").status == "pending"


def test_a_user_without_an_sms_number_cannot_send(db: Database, settings: Settings) -> None:
    from datetime import date

    from inbox import store

    user = store.create_user(
        db, first_name="No", last_name="Number", date_of_birth=date(1990, 1, 1),
        phone=E164("+442079460959"),
    )  # fmt: skip
    with pytest.raises(outbound.SendRefused, match="no OptMsg number"):
        create_sms(settings, db, user.id, FRIEND, "hello")


@pytest.mark.parametrize("text", ["", "   ", "x" * 1601])
def test_empty_or_overlong_text_is_refused(
    db: Database, settings: Settings, user_id: str, text: str
) -> None:
    with pytest.raises(ValueError, match=r"empty|at most"):
        create_sms(settings, db, user_id, FRIEND, text)


def test_statuses_only_move_forward(db: Database, settings: Settings, user_id: str) -> None:
    message_id = handed_over(db, settings, user_id, "SM" + "a" * 32)
    sid = "SM" + "a" * 32
    assert apply_status(db, StatusUpdate(sid, "delivered", None))
    assert not apply_status(db, StatusUpdate(sid, "sent", None))  # late, out of order
    assert not apply_status(db, StatusUpdate(sid, "delivered", None))  # duplicate
    assert status_of(db, message_id) == ("delivered", None)


def test_a_failure_records_the_error_code(db: Database, settings: Settings, user_id: str) -> None:
    message_id = handed_over(db, settings, user_id, "SM" + "b" * 32)
    assert apply_status(db, StatusUpdate("SM" + "b" * 32, "undelivered", 30003))
    assert status_of(db, message_id) == ("undelivered", 30003)


def test_error_21610_in_a_callback_records_the_opt_out(
    db: Database, settings: Settings, user_id: str
) -> None:
    handed_over(db, settings, user_id, "SM" + "c" * 32)
    apply_status(db, StatusUpdate("SM" + "c" * 32, "failed", 21610))
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sms_opt_outs_t.c.address)).scalars().all() == [FRIEND]


def test_a_status_for_an_unknown_sid_changes_nothing(db: Database) -> None:
    assert not apply_status(db, StatusUpdate("SM" + "d" * 32, "delivered", None))


def test_an_unknown_status_word_changes_nothing(
    db: Database, settings: Settings, user_id: str
) -> None:
    message_id = handed_over(db, settings, user_id, "SM" + "e" * 32)
    assert not apply_status(db, StatusUpdate("SM" + "e" * 32, "teleported", None))
    assert status_of(db, message_id) == ("queued", None)
