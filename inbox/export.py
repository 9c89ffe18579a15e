"""Data portability: a user's archive of everything we hold about them.

A request creates a ``pending`` row in ``exports``; a job builds the zip and marks
it ``ready`` (with its size and SHA-256, downloadable until ``expires_at``) or
``failed`` (with a reason). The archive is written streaming, member by member,
from the database in pages and from the blob files in chunks, so its size is not
bounded by memory. It goes to a temporary name in the exports directory
(``.tmp-<id>-<random>.zip``, so that account deletion finds one a killed build left,
and retention removes those older than a build may run), is fsynced, and is then
linked to ``<id>.zip``: a reader never sees half an archive,
and a second build of the same export (dramatiq delivers at least once) never
replaces the first one's file under a row that already names its digest.

Members (all JSON UTF-8, timestamps ISO 8601 UTC):

- ``account.json``: the profile (referral code, addresses, suspension), devices
  (token names and dates, never the tokens), numbers that texted STOP;
- ``messages.json``: every message of every folder the user has (drafts too),
  with its attachments' metadata and status, and where its files are in the zip;
- ``emails/<message id>.eml``: each email exactly as received;
- ``media/<attachment id>-<name>``: each stored attachment's bytes;
- ``contacts.vcf``: the uploaded address book as vCard 4.0;
- ``trusted-senders.json``, ``auth-log.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

import sqlalchemy as sa

from inbox import raw_store, store
from inbox.blobs import BlobStore
from inbox.db import Database, as_utc
from inbox.errors import InboxError, NotFound
from inbox.files import delete_untouched_since, fsync_dir
from inbox.ids import new_id
from inbox.message import AttachmentStatus, Folder
from inbox.models import (
    api_tokens_t,
    attachments_t,
    auth_log_t,
    contacts_t,
    exports_t,
    messages_t,
    raw_messages_t,
    sms_opt_outs_t,
    trust_entries_t,
    users_t,
)
from inbox.vcard import Card, write_card

PENDING, READY, FAILED = "pending", "ready", "failed"
#: Shown, never stored: a ready archive past its ``expires_at``.
EXPIRED = "expired"
#: The directory under the blob directory that holds the archives.
EXPORTS_SUBDIR = "exports"
FORMAT_VERSION = 1
_PAGE = 500
_CHUNK = 1024 * 1024
_MAX_NAME_CHARS = 100
_TEMP_PREFIX, _TEMP_SUFFIX = ".tmp-", ".zip"
#: Shown on an export the sweeper gave up on (see :func:`fail_stale_exports`).
GAVE_UP = "the archive could not be built in time; request a new export"
#: Ready archives one user may hold at once (each is a full copy of their data on
#: disk until it expires).
MAX_READY = 3


class ExportError(InboxError):
    """Root of the export errors."""


class ExportNotReady(ExportError):
    """Raised on a download of an export that is still being built (``pending``) or
    could not be (``failed``); ``state`` says which."""

    def __init__(self, state: str, error: str | None = None) -> None:
        self.state = state
        if state == PENDING:
            detail = "the export is still being prepared; try again in a little while"
        else:
            detail = f"the export could not be prepared: {error or 'unknown error'}"
        super().__init__(detail)


class ExportExpired(ExportError):
    """Raised on a download of an archive past its expiry (its file is deleted by the
    retention job; request a new export)."""


class TooManyExports(ExportError):
    """Raised on a request while the user already has :data:`MAX_READY` archives
    that have not expired."""


class ArchiveFailed(ExportError):
    """Raised while writing an archive when some of the user's data cannot be read (a
    blob file missing or unreadable); the message says which, for the user."""


@dataclass(frozen=True, slots=True)
class ExportRecord:
    id: str
    state: str
    created_at: datetime
    expires_at: datetime | None
    size: int | None
    sha256: str | None
    error: str | None

    def shown_state(self, now: datetime) -> str:
        if self.state == READY and self.expires_at is not None and self.expires_at <= now:
            return EXPIRED
        return self.state

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.shown_state(now or _now()),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at) if self.expires_at else None,
            "size": self.size,
            "sha256": self.sha256,
            "error": self.error,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _record(row: Any) -> ExportRecord:
    return ExportRecord(
        id=row.id,
        state=row.state,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at) if row.expires_at is not None else None,
        size=row.size,
        sha256=row.sha256,
        error=row.error,
    )


def exports_dir(blob_dir: Path) -> Path:
    return Path(blob_dir) / EXPORTS_SUBDIR


def archive_path(directory: Path, export_id: str) -> Path:
    if not re.fullmatch(r"exp_[0-9a-f]{32}", export_id):
        raise ValueError("not an export id")
    return directory / f"{export_id}.zip"


def temp_prefix(export_id: str) -> str:
    """The name prefix of an export's half-written archives (``.tmp-<id>-<random>.zip``):
    a build killed mid-way leaves one behind, full of the user's data, and the id in
    its name lets account deletion find it."""
    archive_path(Path(), export_id)  # refuses anything but an id: it goes into a glob
    return f"{_TEMP_PREFIX}{export_id}-"


def delete_archives(directory: Path, export_ids: list[str]) -> None:
    """Delete the archive files of these exports and their half-written ones (of a
    build in progress, or of one killed mid-way)."""
    for export_id in export_ids:
        archive_path(directory, export_id).unlink(missing_ok=True)
        for tmp in directory.glob(f"{temp_prefix(export_id)}*{_TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)


def purge_stale_temps(directory: Path, *, older_than: timedelta, now: datetime) -> int:
    """Delete half-written archives last written more than ``older_than`` ago (longer
    than a build may run: their build was killed). A build in progress keeps writing
    its file, so its modification time stays recent."""
    if not directory.is_dir():
        return 0
    return delete_untouched_since(
        directory.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"), (now - older_than).timestamp()
    )


# --- requests and reads (scoped to the user) -----------------------------------------


def request_export(db: Database, user_id: str, now: datetime | None = None) -> ExportRecord:
    """A new pending export, or the user's export still pending (one is built at a
    time: asking again while it is prepared gives the same one). TooManyExports
    when :data:`MAX_READY` unexpired archives exist; NotFound for no such user."""
    now = now or _now()
    e = exports_t.c
    with db.write.begin() as conn:
        # The user's row locked (PostgreSQL; SQLite writers are serial anyway): two
        # requests at once make one export, not two.
        lock = sa.select(users_t.c.id).where(users_t.c.id == user_id)
        if conn.dialect.name == "postgresql":
            lock = lock.with_for_update()
        if conn.execute(lock).first() is None:
            raise NotFound(f"no user {user_id}")
        row = conn.execute(
            sa.select(exports_t)
            .where(e.user_id == user_id, e.state == PENDING)
            .order_by(e.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return _record(row)
        ready = conn.execute(
            sa.select(sa.func.count())
            .select_from(exports_t)
            .where(e.user_id == user_id, e.state == READY, e.expires_at > now)
        ).scalar_one()
        if ready >= MAX_READY:
            raise TooManyExports(
                f"you have {ready} exports ready to download; download them, or wait for "
                "one to expire, before asking for another"
            )
        export_id = new_id("exp")
        conn.execute(
            exports_t.insert().values(id=export_id, user_id=user_id, state=PENDING, created_at=now)
        )
        row = conn.execute(sa.select(exports_t).where(e.id == export_id)).one()
    return _record(row)


def get_export(db: Database, user_id: str, export_id: str) -> ExportRecord:
    e = exports_t.c
    with db.read.connect() as conn:
        row = conn.execute(
            sa.select(exports_t).where(e.id == export_id, e.user_id == user_id)
        ).first()
    if row is None:
        raise NotFound("no such export")
    return _record(row)


def list_exports(
    db: Database, user_id: str, *, limit: int = 50, cursor: str | None = None
) -> store.Page:
    """The user's exports, newest first."""
    e = exports_t.c
    limit = max(1, min(limit, store.MAX_PAGE))
    stmt = sa.select(exports_t).where(e.user_id == user_id).order_by(e.id.desc()).limit(limit + 1)
    if cursor:
        stmt = stmt.where(e.id < store.decode_cursor(cursor, "exports"))
    with db.read.connect() as conn:
        rows = list(conn.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    now = _now()
    return store.Page(
        items=[_record(r).as_json(now) for r in rows],
        next=store.encode_cursor("exports", rows[-1].id) if more else None,
    )


def ready_archive(
    db: Database, directory: Path, user_id: str, export_id: str, now: datetime | None = None
) -> tuple[Path, ExportRecord]:
    """The archive file of the user's ready export. NotFound (not theirs, or gone),
    ExportNotReady, ExportExpired."""
    record = get_export(db, user_id, export_id)
    state = record.shown_state(now or _now())
    if state == EXPIRED:
        raise ExportExpired("the export has expired; request a new one")
    if state != READY:
        raise ExportNotReady(state, record.error)
    path = archive_path(directory, export_id)
    if not path.is_file():
        raise NotFound("no such export")  # purged between the two reads
    return path, record


# --- building --------------------------------------------------------------------------


def build(
    db: Database,
    blobs: BlobStore,
    directory: Path,
    export_id: str,
    *,
    ttl: timedelta,
    now: datetime | None = None,
) -> ExportRecord | None:
    """Build a pending export's archive (the job). Idempotent: an export that is no
    longer pending is returned as it is; one whose row is gone (the user deleted
    their account) returns None and leaves no file. Data that cannot be read marks
    the export failed with the reason; database errors propagate (the job retries)."""
    with db.read.connect() as conn:
        row = conn.execute(sa.select(exports_t).where(exports_t.c.id == export_id)).first()
    if row is None:
        return None
    if row.state != PENDING:
        return _record(row)
    directory.mkdir(parents=True, exist_ok=True)
    final = archive_path(directory, export_id)
    fd, tmp_name = tempfile.mkstemp(
        dir=directory, prefix=temp_prefix(export_id), suffix=_TEMP_SUFFIX
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as fh:
            write_archive(db, blobs, row.user_id, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # A hard link never replaces: if another delivery of this job finished
        # first, its file (whose digest may already be recorded) stands.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, final)
        fsync_dir(directory)  # the new name is durable only once the directory is
    except (ArchiveFailed, OSError) as exc:
        reason = str(exc) if isinstance(exc, ArchiveFailed) else "the archive could not be written"
        return _finish(db, directory, export_id, {"state": FAILED, "error": reason[:500]})
    except NotFound:
        return None  # the account was deleted while its archive was being written
    finally:
        tmp.unlink(missing_ok=True)
    size, digest = _file_digest(final)
    finished = (now or _now()) + ttl
    values = {"state": READY, "size": size, "sha256": digest, "expires_at": finished}
    return _finish(db, directory, export_id, values)


def _finish(
    db: Database, directory: Path, export_id: str, values: dict[str, Any]
) -> ExportRecord | None:
    e = exports_t.c
    with db.write.begin() as conn:
        conn.execute(
            exports_t.update().where(e.id == export_id, e.state == PENDING).values(**values)
        )
        row = conn.execute(sa.select(exports_t).where(e.id == export_id)).first()
    if row is None:
        # The account went while the archive was built: nothing of it may stay.
        delete_archives(directory, [export_id])
        return None
    return _record(row)


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def fail_stale_exports(
    db: Database, *, older_than_s: float, now: datetime | None = None
) -> list[str]:
    """Mark failed (with :data:`GAVE_UP`) the exports still pending ``older_than_s``
    after their request: every attempt of their job has run out (an archive too
    large to build within the job's time limit, or a build that keeps failing), so
    enqueueing them again would only rebuild them forever. Their ids, for the log;
    the user may then request a new export."""
    cutoff = (now or _now()) - timedelta(seconds=older_than_s)
    e = exports_t.c
    stale = sa.and_(e.state == PENDING, e.created_at < cutoff)
    with db.write.begin() as conn:
        ids = list(conn.execute(sa.select(e.id).where(stale).order_by(e.id)).scalars())
        if ids:
            # The state is checked again: a build may have finished meanwhile.
            conn.execute(
                exports_t.update().where(e.id.in_(ids), stale).values(state=FAILED, error=GAVE_UP)
            )
    return ids


def pending_exports(
    db: Database,
    *,
    older_than_s: float,
    younger_than_s: float | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[str]:
    """Exports pending for more than ``older_than_s`` (and, when given, less than
    ``younger_than_s``, past which :func:`fail_stale_exports` gives up on them): their
    job was lost with an in-memory queue or a broker restart; the sweeper enqueues
    them again."""
    now = now or _now()
    e = exports_t.c
    where = [e.state == PENDING, e.created_at < now - timedelta(seconds=older_than_s)]
    if younger_than_s is not None:
        where.append(e.created_at >= now - timedelta(seconds=younger_than_s))
    with db.read.connect() as conn:
        return list(
            conn.execute(sa.select(e.id).where(*where).order_by(e.id).limit(limit)).scalars()
        )


def purge_expired(
    db: Database,
    directory: Path,
    *,
    ttl: timedelta,
    build_time_limit: timedelta,
    now: datetime | None = None,
) -> int:
    """Delete archives past their expiry, and failed exports older than ``ttl`` (their
    reason has been shown long enough): files first, then rows. Half-written archives
    untouched for longer than ``build_time_limit`` (their build was killed) go too."""
    now = now or _now()
    purge_stale_temps(directory, older_than=build_time_limit, now=now)
    e = exports_t.c
    gone = sa.or_(
        sa.and_(e.state == READY, e.expires_at < now),
        sa.and_(e.state == FAILED, e.created_at < now - ttl),
    )
    with db.read.connect() as conn:
        ids = list(conn.execute(sa.select(e.id).where(gone)).scalars())
    if not ids:
        return 0
    delete_archives(directory, ids)
    with db.write.begin() as conn:
        conn.execute(exports_t.delete().where(e.id.in_(ids)))
    return len(ids)


# --- the archive -----------------------------------------------------------------------


def write_archive(db: Database, blobs: BlobStore, user_id: str, out: IO[bytes]) -> None:
    """Write the user's whole archive as a zip to ``out`` (seekable). NotFound when
    the user does not exist; ArchiveFailed when a stored file cannot be read."""
    user = store.get_user(db, user_id)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _write_json(zf, "account.json", _account(db, user))
        media: list[tuple[str, str, int]] = []  # (member name, sha256, size)
        with zf.open(_info("messages.json"), "w", force_zip64=True) as fh:
            emails = _write_messages(db, user_id, fh, media)
        for message_id, raw_id in emails:
            _write_eml(db, zf, message_id, raw_id)
        for name, digest, size in media:
            _copy_blob(blobs, zf, name, digest, size)
        with zf.open(_info("contacts.vcf"), "w", force_zip64=True) as fh:
            for card in _cards(db, user_id):
                fh.write(write_card(card).encode("utf-8"))
        _write_json(zf, "trusted-senders.json", _trusted_senders(db, user_id))
        _write_json(zf, "auth-log.json", _auth_log(db, user_id))


def _info(name: str, *, stored: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_now().timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _write_json(zf: zipfile.ZipFile, name: str, data: Any) -> None:
    zf.writestr(_info(name), json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _account(db: Database, user: store.UserRecord) -> dict[str, Any]:
    t, o = api_tokens_t.c, sms_opt_outs_t.c
    with db.read.connect() as conn:
        devices = [
            {
                "name": r.name,
                "created_at": _iso(r.created_at),
                "last_used_at": _iso(r.last_used_at) if r.last_used_at else None,
            }
            for r in conn.execute(
                sa.select(t.name, t.created_at, t.last_used_at)
                .where(t.user_id == user.id)
                .order_by(t.id)
            )
        ]
        opted_out = [
            {"address": r.address, "since": _iso(r.created_at)}
            for r in conn.execute(
                sa.select(o.address, o.created_at).where(o.user_id == user.id).order_by(o.address)
            )
        ]
    profile = user.as_json()
    profile["created_at"] = _iso(user.created_at)
    profile["suspended_at"] = _iso(user.suspended_at) if user.suspended_at else None
    return {
        "format_version": FORMAT_VERSION,
        "exported_at": _iso(_now()),
        "profile": profile,
        "devices": devices,
        "sms_opt_outs": opted_out,
    }


def _message_pages(db: Database, user_id: str) -> Iterator[tuple[list[Any], dict[str, list[Any]]]]:
    """The user's messages (every folder but ``discarded``, which holds mail of senders
    they blocked, kept only while the block can be undone) a page at a time, with
    each page's attachment rows."""
    m, a = messages_t.c, attachments_t.c
    last = ""
    while True:
        with db.read.connect() as conn:
            rows = list(
                conn.execute(
                    sa.select(messages_t)
                    .where(
                        m.user_id == user_id,
                        m.folder != str(Folder.DISCARDED),
                        m.id > last,
                    )
                    .order_by(m.id)
                    .limit(_PAGE)
                )
            )
            if not rows:
                return
            by_message: dict[str, list[Any]] = {r.id: [] for r in rows}
            for att in conn.execute(
                sa.select(attachments_t)
                .where(a.message_id.in_(list(by_message)), a.user_id == user_id)
                .order_by(a.id)
            ):
                by_message[att.message_id].append(att)
        yield rows, by_message
        last = rows[-1].id


def _write_messages(
    db: Database, user_id: str, out: IO[bytes], media: list[tuple[str, str, int]]
) -> list[tuple[str, str]]:
    """Stream messages.json; collect the media and emails to copy after it."""
    emails: list[tuple[str, str]] = []
    out.write(b"[")
    first = True
    for rows, attachments in _message_pages(db, user_id):
        for row in rows:
            atts = []
            for att in attachments[row.id]:
                name = None
                if att.status == AttachmentStatus.STORED and att.sha256:
                    name = f"media/{att.id}-{safe_member_name(att.filename, att.content_type)}"
                    media.append((name, att.sha256, att.size or 0))
                atts.append(
                    {
                        "id": att.id,
                        "filename": att.filename,
                        "content_type": att.content_type,
                        "size": att.size,
                        "status": att.status,
                        "sha256": att.sha256,
                        "error": att.error,
                        "file": name,
                    }
                )
            eml = None
            if row.raw_id is not None:
                eml = f"emails/{row.id}.eml"
                emails.append((row.id, row.raw_id))
            item = {
                "id": row.id,
                "folder": row.folder,
                "direction": row.direction,
                "channel": row.channel,
                "bridge": row.bridge,
                "sender": row.sender,
                "recipient": row.recipient,
                "subject": row.subject,
                "text": row.text,
                "html": row.html,
                "received_at": _iso(row.received_at),
                "read": bool(row.read),
                "reason": row.reason,
                "status": row.status,
                "error_code": row.error_code,
                "conversation": row.conversation,
                "auth": json.loads(row.auth) if row.auth else None,
                "provider_meta": json.loads(row.provider_meta) if row.provider_meta else None,
                "eml": eml,
                "attachments": atts,
            }
            out.write((b"\n  " if first else b",\n  ") + _json_bytes(item))
            first = False
    out.write(b"\n]\n" if not first else b"]\n")
    return emails


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _write_eml(db: Database, zf: zipfile.ZipFile, message_id: str, raw_id: str) -> None:
    r = raw_messages_t.c
    with db.read.connect() as conn:
        row = conn.execute(sa.select(r.auth_results).where(r.id == raw_id)).first()
    if row is None:
        return  # the raw email went with its last message meanwhile
    raw = raw_store.load(db, raw_id)
    zf.writestr(_info(f"emails/{message_id}.eml"), raw_store.as_eml(raw, row.auth_results))


def _copy_blob(blobs: BlobStore, zf: zipfile.ZipFile, name: str, digest: str, size: int) -> None:
    info = _info(name, stored=True)
    info.file_size = size  # lets zipfile choose ZIP64 for a large file up front
    try:
        source: BinaryIO = blobs.open(digest)
    except OSError:
        raise ArchiveFailed(
            f"the stored file of {name.removeprefix('media/')} could not be read"
        ) from None
    with source, zf.open(info, "w", force_zip64=size > 1 << 30) as target:
        try:
            shutil.copyfileobj(source, target, _CHUNK)
        except OSError:
            raise ArchiveFailed(
                f"the stored file of {name.removeprefix('media/')} could not be read"
            ) from None


def _cards(db: Database, user_id: str) -> Iterator[Card]:
    c = contacts_t.c
    last = ""
    while True:
        with db.read.connect() as conn:
            rows = list(
                conn.execute(
                    sa.select(c.id, c.name, c.phones, c.emails)
                    .where(c.user_id == user_id, c.id > last)
                    .order_by(c.id)
                    .limit(_PAGE)
                )
            )
        if not rows:
            return
        for r in rows:
            yield Card(r.name, tuple(json.loads(r.phones)), tuple(json.loads(r.emails)))
        last = rows[-1].id


def _trusted_senders(db: Database, user_id: str) -> list[dict[str, Any]]:
    t = trust_entries_t.c
    with db.read.connect() as conn:
        return [
            {
                "address": r.address,
                "verdict": r.verdict,
                "source": r.source,
                "created_at": _iso(r.created_at),
            }
            for r in conn.execute(
                sa.select(t.address, t.verdict, t.source, t.created_at)
                .where(t.user_id == user_id)
                .order_by(t.address)
            )
        ]


def _auth_log(db: Database, user_id: str) -> list[dict[str, Any]]:
    a = auth_log_t.c
    with db.read.connect() as conn:
        return [
            {
                "at": _iso(r.created_at),
                "method": r.method,
                "outcome": r.outcome,
                "device": r.device,
                "ip": r.ip,
            }
            for r in conn.execute(
                sa.select(a.created_at, a.method, a.outcome, a.device, a.ip)
                .where(a.user_id == user_id)
                .order_by(a.id)
            )
        ]


_UNSAFE = re.compile(r"[^\w.\-]+")


def safe_member_name(filename: str | None, content_type: str) -> str:
    """A file name safe in any unzip tool: no directories, no control or shell
    characters, no leading dot, at most 100 characters, and an extension from the
    content type when the sender gave no name."""
    name = unicodedata.normalize("NFC", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip("._")
    if not name:
        ext = mimetypes.guess_extension(content_type.split(";", 1)[0].strip().lower()) or ".bin"
        name = "file" + ext
    if len(name) > _MAX_NAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and 0 < len(ext) <= 10 else ""
        name = name[: _MAX_NAME_CHARS - len(keep) - 1].rstrip("._") + ("." + keep if keep else "")
    return name
