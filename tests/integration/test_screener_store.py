"""The screener, trust-list and address-book store functions, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from inbox import store
from inbox.blobs import DirectoryBlobStore
from inbox.db import Database
from inbox.errors import NotFound
from inbox.message import Inbound, InboundAttachment, Outcome
from inbox.models import messages_t, screener_decisions_t, trust_entries_t
from optin import NothingToUndo, TrustVerdict, address_book, parse_contacts, screener, trust
from optin.contacts import ContactsTooLarge
from tests.integration.helpers import inbound, make_user, run_batch

ADA_NUMBER = "+14155550199"
BOB_NUMBER = "+14155550198"
STRANGER = "+14155550111"
OTHER = "+14155550112"


@pytest.fixture
def ada(db: Database) -> str:
    return make_user(db, phone="+442079460958", sms_number=ADA_NUMBER)


@pytest.fixture
def bob(db: Database) -> str:
    return make_user(db, phone="+442079460959", sms_number=BOB_NUMBER, first="Bob")


def folders(db: Database, user_id: str) -> dict[str, str]:
    """message text -> folder, for one user."""
    with db.read.connect() as conn:
        rows = conn.execute(
            sa.select(messages_t.c.text, messages_t.c.folder).where(messages_t.c.user_id == user_id)
        )
        return {text: folder for text, folder in rows}


def held(db: Database, *messages: tuple[str, str, str]) -> None:
    """Ingest (sid, sender, recipient) messages whose text is the sid."""
    run_batch(db, [inbound(sid, sender=s, to=to, text=sid) for sid, s, to in messages])


def cards_of(db: Database, user_id: str, **kwargs: object) -> store.Page:
    return screener.cards(db, user_id, region="US", quarantine_days=30, **kwargs)  # type: ignore[arg-type]


# --- cards ------------------------------------------------------------------------------


def test_cards_group_held_messages_by_sender_newest_first(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER), ("SM2", OTHER, ADA_NUMBER))
    held(db, ("SM3", STRANGER, ADA_NUMBER))
    page = cards_of(db, ada)
    assert [c["sender"] for c in page.items] == [STRANGER, OTHER]
    card = page.items[0]
    assert card["count"] == 2
    assert card["display"] == "(415) 555-0111"
    assert (card["first"]["preview"], card["latest"]["preview"]) == ("SM1", "SM3")
    assert card["reason"].startswith("unknown sender")


def test_card_shows_when_its_first_message_expires(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    card = screener.cards(db, ada, region="US", quarantine_days=7).items[0]
    first = datetime.fromisoformat(card["first"]["received_at"])
    assert datetime.fromisoformat(card["expires_at"]) == first + timedelta(days=7)


def test_cards_page_with_a_cursor(db: Database, ada: str) -> None:
    senders = [f"+1415555012{i}" for i in range(5)]
    held(db, *((f"SM{i}", s, ADA_NUMBER) for i, s in enumerate(senders)))
    first = cards_of(db, ada, limit=3)
    second = cards_of(db, ada, limit=3, cursor=first.next)
    assert len(first.items) == 3 and len(second.items) == 2 and second.next is None
    seen = [c["sender"] for c in first.items + second.items]
    assert sorted(seen) == sorted(senders)


def test_cards_never_show_another_users_messages(db: Database, ada: str, bob: str) -> None:
    held(db, ("SM1", STRANGER, BOB_NUMBER))
    assert cards_of(db, ada).items == []


# --- allow / block ----------------------------------------------------------------------


def test_allow_moves_exactly_that_senders_held_messages(db: Database, ada: str, bob: str) -> None:
    held(
        db,
        ("SM1", STRANGER, ADA_NUMBER),
        ("SM2", STRANGER, ADA_NUMBER),
        ("SM3", OTHER, ADA_NUMBER),
        ("SM4", STRANGER, BOB_NUMBER),
    )
    result = screener.allow(db, ada, [STRANGER])
    assert result.messages == 2
    assert folders(db, ada) == {"SM1": "inbox", "SM2": "inbox", "SM3": "quarantine"}
    assert folders(db, bob) == {"SM4": "quarantine"}
    (next_one,) = run_batch(db, [inbound("SM5", sender=STRANGER, to=ADA_NUMBER)])
    assert next_one.outcome is Outcome.ADMITTED


def test_block_hides_held_messages_and_drops_the_next(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    message_id = store.list_messages(db, ada, store.VISIBLE_FOLDERS[1]).items[0]["id"]
    screener.block(db, ada, [STRANGER])
    assert cards_of(db, ada).items == []
    with pytest.raises(NotFound):
        store.get_message(db, ada, message_id)
    (next_one,) = run_batch(db, [inbound("SM2", sender=STRANGER, to=ADA_NUMBER)])
    assert next_one.outcome is Outcome.DROPPED


def test_a_retry_of_a_blocked_message_is_answered_as_dropped(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    screener.block(db, ada, [STRANGER])
    trust.remove(db, ada, STRANGER)  # type: ignore[arg-type]
    (retry,) = run_batch(db, [inbound("SM1", sender=STRANGER, to=ADA_NUMBER)])
    assert retry.outcome is Outcome.DROPPED and retry.duplicate
    assert folders(db, ada) == {"SM1": "discarded"}


def test_bulk_allow_decides_several_senders_at_once(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER), ("SM2", OTHER, ADA_NUMBER))
    result = screener.allow(db, ada, [STRANGER, OTHER, STRANGER])
    assert result.senders == (STRANGER, OTHER) and result.messages == 2
    assert cards_of(db, ada).items == []


def test_deciding_a_sender_with_nothing_held_changes_nothing(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    with pytest.raises(NotFound):
        screener.allow(db, ada, [STRANGER, OTHER])
    assert folders(db, ada) == {"SM1": "quarantine"}
    assert trust.list_entries(db, ada) == []


def test_one_user_cannot_decide_a_sender_that_wrote_only_to_another(
    db: Database, ada: str, bob: str
) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    with pytest.raises(NotFound):
        screener.block(db, bob, [STRANGER])
    assert folders(db, ada) == {"SM1": "quarantine"}


@pytest.mark.parametrize("senders", [[], [f"+1415555{i:04d}" for i in range(501)]])
def test_a_decision_names_one_to_max_senders(db: Database, ada: str, senders: list[str]) -> None:
    with pytest.raises(ValueError, match="sender"):
        screener.allow(db, ada, senders)


# --- undo -------------------------------------------------------------------------------


def test_undo_of_allow_holds_the_messages_again_and_forgets_the_trust(
    db: Database, ada: str
) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    reason_before = cards_of(db, ada).items[0]["reason"]
    screener.allow(db, ada, [STRANGER])
    undone = screener.undo(db, ada, window_seconds=60)
    assert (undone.action, undone.messages) == ("allow", 1)
    assert folders(db, ada) == {"SM1": "quarantine"}
    assert cards_of(db, ada).items[0]["reason"] == reason_before
    assert trust.list_entries(db, ada) == []


def test_undo_of_block_restores_the_previous_trust_entry(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    trust.add(db, ada, STRANGER, TrustVerdict.TRUSTED)  # type: ignore[arg-type]
    before = trust.get(db, ada, STRANGER)
    screener.block(db, ada, [STRANGER])
    screener.undo(db, ada, window_seconds=60)
    assert folders(db, ada) == {"SM1": "quarantine"}
    after = trust.get(db, ada, STRANGER)
    assert (after.verdict, after.source) == (before.verdict, before.source)


def test_undo_twice_is_refused(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    screener.allow(db, ada, [STRANGER])
    screener.undo(db, ada, window_seconds=60)
    with pytest.raises(NothingToUndo):
        screener.undo(db, ada, window_seconds=60)


def test_undo_after_the_window_is_refused(db: Database, ada: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    screener.allow(db, ada, [STRANGER])
    later = datetime.now(UTC) + timedelta(seconds=61)
    with pytest.raises(NothingToUndo):
        screener.undo(db, ada, window_seconds=60, now=later)


def test_undo_is_per_user(db: Database, ada: str, bob: str) -> None:
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    screener.allow(db, ada, [STRANGER])
    with pytest.raises(NothingToUndo):
        screener.undo(db, bob, window_seconds=60)


# --- retention --------------------------------------------------------------------------


def _with_attachment(sid: str, received_at: datetime, content: bytes) -> Inbound:
    base = inbound(sid, sender=STRANGER, to=ADA_NUMBER, text=sid)
    attachment = InboundAttachment(content_type="image/png", filename="a.png", content=content)
    return dataclasses.replace(base, received_at=received_at, attachments=(attachment,))


def test_expiry_deletes_old_held_messages_and_their_blobs(
    db: Database, ada: str, tmp_path: Path
) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    now = datetime.now(UTC)
    old, new = b"old attachment", b"new attachment"
    old_digest, new_digest = blobs.put(old), blobs.put(new)
    run_batch(
        db,
        [
            _with_attachment("SMold", now - timedelta(days=31), old),
            _with_attachment("SMnew", now - timedelta(days=29), new),
        ],
    )
    assert screener.expire_held(db, blobs, quarantine_days=30) == 1
    assert folders(db, ada) == {"SMnew": "quarantine"}
    assert not blobs.exists(old_digest) and blobs.exists(new_digest)


def test_expiry_never_touches_the_inbox(db: Database, ada: str, tmp_path: Path) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    trust.add(db, ada, STRANGER)  # type: ignore[arg-type]
    old = dataclasses.replace(
        inbound("SMold", sender=STRANGER, to=ADA_NUMBER, text="SMold"),
        received_at=datetime.now(UTC) - timedelta(days=400),
    )
    run_batch(db, [old])
    assert screener.expire_held(db, blobs, quarantine_days=30) == 0
    assert folders(db, ada) == {"SMold": "inbox"}


def test_blocked_messages_are_deleted_once_the_undo_window_has_passed(
    db: Database, ada: str, tmp_path: Path
) -> None:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    held(db, ("SM1", STRANGER, ADA_NUMBER))
    screener.block(db, ada, [STRANGER])
    assert screener.purge_decisions(db, blobs, window_seconds=60) == 0
    assert folders(db, ada) == {"SM1": "discarded"}
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert screener.purge_decisions(db, blobs, window_seconds=60, now=later) == 1
    assert folders(db, ada) == {}
    with db.read.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(screener_decisions_t)).scalar() == 0
        )


# --- trust list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed", ["415-555-0100", "(415) 555 0100", "+1 415 555 0100", "001 415 555 0100"]
)
def test_a_typed_number_is_one_entry_whatever_the_spelling(
    db: Database, ada: str, typed: str
) -> None:
    trust.add(db, ada, trust.parse_entry("+14155550100", "US"))
    trust.add(db, ada, trust.parse_entry(typed, "US"))
    assert [e.address for e in trust.list_entries(db, ada)] == ["+14155550100"]


def test_domain_entry_is_stored_in_canonical_form(db: Database, ada: str) -> None:
    trust.add(db, ada, trust.parse_entry("@MyBank.COM", "US"))
    (entry,) = trust.list_entries(db, ada)
    assert (entry.address, entry.as_json()["kind"]) == ("@mybank.com", "domain")


def test_trust_list_pages_in_address_order_by_verdict(db: Database, ada: str) -> None:
    for i in range(4):
        trust.add(db, ada, trust.parse_entry(f"+1415555010{i}", "US"))
    trust.add(db, ada, trust.parse_entry("+14155550199", "US"), TrustVerdict.BLOCKED)
    first = trust.list_page(db, ada, limit=3, verdict=TrustVerdict.TRUSTED)
    second = trust.list_page(db, ada, limit=3, cursor=first.next, verdict=TrustVerdict.TRUSTED)
    addresses = [e["address"] for e in first.items + second.items]
    assert addresses == [f"+1415555010{i}" for i in range(4)] and second.next is None


# --- address book -----------------------------------------------------------------------

CSV = b"Name,Phone\nAlice,415-555-0100\nBob,not a number\nCarol,+44 7911 123456\n"


def import_csv(db: Database, user_id: str, data: bytes = CSV, **kwargs: int) -> int:
    report = parse_contacts(data, region="US", filename="book.csv")
    return address_book.import_contacts(
        db, user_id, report, max_contacts=kwargs.get("max_contacts", 1000)
    ).imported


def test_import_stores_the_good_contacts(db: Database, ada: str) -> None:
    assert import_csv(db, ada) == 2
    page = address_book.list_page(db, ada)
    assert [(c["name"], c["phones"]) for c in page.items] == [
        ("Alice", ["+14155550100"]),
        ("Carol", ["+447911123456"]),
    ]


def test_import_over_the_contact_limit_stores_nothing(db: Database, ada: str) -> None:
    import_csv(db, ada)
    with pytest.raises(ContactsTooLarge):
        import_csv(db, ada, max_contacts=3)
    assert len(address_book.list_page(db, ada).items) == 2


def test_opt_in_all_trusts_every_number_but_keeps_a_block(db: Database, ada: str) -> None:
    import_csv(db, ada)
    trust.add(db, ada, trust.parse_entry("+447911123456", "US"), TrustVerdict.BLOCKED)
    assert address_book.opt_in(db, ada) == 1
    entries = {e.address: (e.verdict, e.source) for e in trust.list_entries(db, ada)}
    assert entries == {
        "+14155550100": (TrustVerdict.TRUSTED, "contacts"),
        "+447911123456": (TrustVerdict.BLOCKED, "manual"),
    }


def test_opt_in_of_another_users_contact_is_not_found(db: Database, ada: str, bob: str) -> None:
    import_csv(db, ada)
    contact_id = address_book.list_page(db, ada).items[0]["id"]
    with pytest.raises(NotFound):
        address_book.opt_in(db, bob, [contact_id])
    assert trust.list_entries(db, bob) == []


def test_deleting_the_address_book_can_remove_only_its_own_trust_entries(
    db: Database, ada: str
) -> None:
    import_csv(db, ada)
    address_book.opt_in(db, ada)
    trust.add(db, ada, trust.parse_entry("+14155550177", "US"))
    assert address_book.delete_all(db, ada, untrust=True) == (2, 2)
    assert address_book.list_page(db, ada).items == []
    assert [e.address for e in trust.list_entries(db, ada)] == ["+14155550177"]


def test_deleting_the_address_book_keeps_trust_entries_by_default(db: Database, ada: str) -> None:
    import_csv(db, ada)
    address_book.opt_in(db, ada)
    assert address_book.delete_all(db, ada) == (2, 0)
    with db.read.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(trust_entries_t)).scalar() == 2


# --- auto-trust -------------------------------------------------------------------------


def test_sending_to_a_counterpart_trusts_them(db: Database, ada: str) -> None:
    assert trust.note_sent_to(db, ada, STRANGER) is True  # type: ignore[arg-type]
    entry = trust.get(db, ada, STRANGER)
    assert (entry.verdict, entry.source) == (TrustVerdict.TRUSTED, "sent_to")


def test_sending_to_a_blocked_counterpart_keeps_the_block(db: Database, ada: str) -> None:
    trust.add(db, ada, STRANGER, TrustVerdict.BLOCKED)  # type: ignore[arg-type]
    assert trust.note_sent_to(db, ada, STRANGER) is False  # type: ignore[arg-type]
    assert trust.get(db, ada, STRANGER).verdict is TrustVerdict.BLOCKED
