"""The ``optmsg`` command line: serve, database, config, users, tokens, opt-in, quarantine.

Every reporting command takes ``--json`` and then prints exactly one JSON document
on stdout. Exit codes: 0 ok, 1 the operation failed (message on stderr), 2 bad
configuration or usage (the offending key or argument is named).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import redis
import sqlalchemy as sa

from config import ConfigError, Settings, load_settings
from config.pools import check_pool, gateway_need, worker_need
from gateway import devtools, erasure, spool_inspect
from gateway.logs import configure_logging
from gateway.retention import run_retention
from inbox import export, privacy_retention, store, suspension
from inbox.addresses import parse_email, parse_in_regions, parse_phone
from inbox.blobs import DirectoryBlobStore
from inbox.bridge_stats import EMAIL_BRIDGE, bridge_stats
from inbox.db import Database, open_database
from inbox.errors import AddressError, InboxError, NotFound
from inbox.message import Folder
from inbox.migrate import upgrade
from inbox.spool import requeue_dead_letters
from optin import TrustVerdict, address_book, parse_contacts, quarantine, screener, trust
from optin.contacts import ContactsTooLarge
from optin.errors import OptinError


class UsageError(Exception):
    """Raised for a bad command-line value; exits 2 naming the argument."""


def _print(args: argparse.Namespace, data: Any, text: str | Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        print(text() if callable(text) else text)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(Path(args.config) if args.config else None)
    configure_logging(settings.log)
    if args.command != "db":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _loader(args: argparse.Namespace) -> Callable[[], Settings]:
    """Loads the settings again from where this command found them (SIGHUP)."""
    return functools.partial(load_settings, Path(args.config) if args.config else None)


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[tuple[Settings, Database]]:
    """Settings and a migrated database for one command, disposed afterwards."""
    settings = _settings(args)
    db = open_database(settings.database)
    try:
        upgrade(db)
        yield settings, db
    finally:
        db.dispose()


def _phone(value: str, region: str, arg: str) -> str:
    try:
        return parse_phone(value, region)
    except AddressError as exc:
        raise UsageError(f"{arg}: {value!r} is not a usable phone number: {exc.reason}") from None


def _all_pages(fetch: Callable[[str | None], store.Page]) -> list[dict[str, Any]]:
    """Every item of a paged list (an operator's listing prints it whole)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        items.extend(page.items)
        if page.next is None:
            return items
        cursor = page.next


# --- commands ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    settings = _settings(args)
    if args.no_worker and not settings.redis.url:
        raise UsageError(
            "--no-worker needs redis.url: without Redis, jobs wait in this process's "
            "memory and only its own worker can run them"
        )
    check_pool(settings, gateway_need(settings, worker=not args.no_worker))
    serve(settings, worker=not args.no_worker, load=_loader(args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from gateway.serve import run_worker
    from gateway.worker_supervisor import (
        Supervisor,
        SupervisorError,
        supervise,
        supervisor_pid,
        worker_argv,
    )

    settings = _settings(args)
    if not settings.redis.url:
        raise UsageError("redis.url is empty: `optmsg serve` runs the jobs itself without Redis")
    check_pool(settings, worker_need(settings))
    try:
        supervisor = supervisor_pid(os.environ)
    except SupervisorError as exc:
        raise UsageError(str(exc)) from exc
    processes = settings.worker.processes
    if supervisor is None and processes > 1:
        if args.metrics is not None and int(args.metrics.rpartition(":")[2]) + processes > 65536:
            raise UsageError(f"--metrics: {processes} ports from {args.metrics} do not fit")
        command = functools.partial(worker_argv, config=args.config, metrics=args.metrics)
        print(f"optmsg: worker supervisor running {processes} processes", flush=True)
        return supervise(Supervisor(command, processes))
    run_worker(settings, metrics_listen=args.metrics, load=_loader(args), supervisor=supervisor)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = open_database(settings.database)
    try:
        revision = upgrade(db)
    finally:
        db.dispose()
    _print(args, {"revision": revision}, f"database at revision {revision}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    data = settings.masked()
    _print(args, data, lambda: _toml_like(data))
    return 0


def _toml_like(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if scalars and prefix:
        lines.append(f"[{prefix}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {json.dumps(value)}")
    for key, value in tables.items():
        if lines:
            lines.append("")
        lines.append(_toml_like(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(lines)


def cmd_users_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    region = settings.optin.default_region
    try:
        dob = date.fromisoformat(args.dob)
    except ValueError:
        raise UsageError(f"--dob: {args.dob!r} is not a date in YYYY-MM-DD form") from None
    phone = _phone(args.phone, region, "--phone")
    sms = _phone(args.sms_number, region, "--sms-number") if args.sms_number else None
    email = None
    if args.email_address:
        try:
            email = parse_email(args.email_address)
        except AddressError as exc:
            raise UsageError(f"--email-address: {exc.reason}") from None
    with _session(args) as (_, db):
        user = store.create_user(
            db,
            first_name=args.first_name,
            last_name=args.last_name,
            date_of_birth=dob,
            phone=phone,  # type: ignore[arg-type]
            sms_number=sms,  # type: ignore[arg-type]
            email_address=email,
        )
    _print(args, user.as_json(), f"created user {user.id} ({user.first_name} {user.last_name})")
    return 0


def cmd_users_add_address(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if bool(args.sms_number) == bool(args.email_address):
        raise UsageError("give exactly one of --sms-number and --email-address")
    address: Any
    if args.sms_number:
        address, kind = (
            _phone(args.sms_number, settings.optin.default_region, "--sms-number"),
            "sms",
        )
    else:
        try:
            address, kind = parse_email(args.email_address), "email"
        except AddressError as exc:
            raise UsageError(f"--email-address: {exc.reason}") from None
    with _session(args) as (_, db):
        user = store.add_address(db, args.user_id, address, kind)
    _print(args, user.as_json(), f"{address} now routes to user {user.id}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        users = store.list_users(db)
    data = {"items": [u.as_json() for u in users], "next": None}

    def text() -> str:
        if not users:
            return "no users"
        return "\n".join(
            f"{u.id}  {u.first_name} {u.last_name}  {u.phone}  {' '.join(u.addresses)}"
            for u in users
        )

    _print(args, data, text)
    return 0


def cmd_users_delete(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        try:
            erasure.delete_account(
                settings, db, DirectoryBlobStore(settings.storage.blob_dir), args.user_id
            )
        except redis.RedisError as exc:
            raise InboxError(
                f"user {args.user_id} deleted from the database, but not their Redis keys "
                f"({exc}); run this command again once Redis is reachable"
            ) from None
    _print(args, {"deleted": args.user_id}, f"deleted user {args.user_id} and all their data")
    return 0


def _suspend(args: argparse.Namespace, suspended: bool) -> int:
    with _session(args) as (_, db):
        user = suspension.set_suspended(db, args.user_id, suspended)
    state = f"suspended since {user.suspended_at:%Y-%m-%d %H:%M}" if user.suspended_at else "active"
    _print(args, user.as_json(), f"user {user.id} is {state}")
    return 0


def cmd_users_suspend(args: argparse.Namespace) -> int:
    return _suspend(args, True)


def cmd_users_unsuspend(args: argparse.Namespace) -> int:
    return _suspend(args, False)


def cmd_users_export(args: argparse.Namespace) -> int:
    """Write the user's archive (the one the user can request) to --out, now."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out: {out} exists (--force replaces it)")
    if not out.parent.is_dir():
        raise UsageError(f"--out: the directory {out.parent} does not exist")
    with _session(args) as (settings, db):
        blobs = DirectoryBlobStore(settings.storage.blob_dir)
        tmp = out.with_name(f".{out.name}.partial")
        try:
            with tmp.open("wb") as fh:
                export.write_archive(db, blobs, args.user_id, fh)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    size = out.stat().st_size
    _print(
        args,
        {"user_id": args.user_id, "path": str(out), "size": size},
        f"wrote the data of user {args.user_id} to {out} ({size:,} bytes)",
    )
    return 0


def cmd_abuse_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        flags = privacy_retention.list_flags(db)
    data = {"items": [f.as_json() for f in flags], "next": None}

    def text() -> str:
        if not flags:
            return "no flagged IP addresses"
        return "\n".join(
            f"{f.ip}  {','.join(f.reasons)}  x{f.count}  "
            f"{f.first_seen:%Y-%m-%d %H:%M} .. {f.last_seen:%Y-%m-%d %H:%M}"
            for f in flags
        )

    _print(args, data, text)
    return 0


def cmd_abuse_clear(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        cleared = privacy_retention.clear_flag(db, args.ip)
    if not cleared:
        raise NotFound(f"{args.ip} is not flagged")
    _print(
        args,
        {"ip": args.ip, "cleared": cleared},
        f"{args.ip} is no longer flagged; its log entries are purged like any other",
    )
    return 0


def cmd_spool_dead(args: argparse.Namespace) -> int:
    # Reads files only: no database, and safe beside running gateways.
    root = _settings(args).spool.dir
    letters = spool_inspect.dead_letters(root)
    data = {"spool_dir": str(root), "items": [d.as_json() for d in letters]}

    def text() -> str:
        if not letters:
            return f"no dead letters under {root}"
        return "\n".join(
            f"{d.file} #{d.index}  {d.kind}  {d.received_at or '-'}  "
            + (d.problem or "  ".join(f"{k}={v}" for k, v in d.fields.items()))
            for d in letters
        )

    _print(args, data, text)
    return 0


def cmd_spool_requeue(args: argparse.Namespace) -> int:
    settings = _settings(args).spool
    done = requeue_dead_letters(settings.dir, settings.max_bytes)
    data = {
        "requeued": done.records,
        "slot": str(done.slot) if done.slot is not None else None,
        "kept": [str(p) for p in done.kept],
    }

    def text() -> str:
        if done.slot is None:
            return f"no dead letters under {settings.dir}"
        lines = [
            f"requeued {done.records} dead letter(s) into {done.slot}: a running gateway "
            f"replays them within spool.replay_interval_s ({settings.replay_interval_s:g} s), "
            "or the next one to start"
        ]
        lines += [f"kept (damaged part-way; readable records were moved): {p}" for p in done.kept]
        return "\n".join(lines)

    _print(args, data, text)
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        token_id, token = store.create_token(db, args.user_id, args.name)
    _print(
        args,
        {"id": token_id, "user_id": args.user_id, "token": token},
        f"{token}\n(shown once; only its hash is stored)",
    )
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        store.get_user(db, args.user_id)  # NotFound for an unknown user
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = store.list_tokens(db, args.user_id, limit=store.MAX_PAGE, cursor=cursor)
            items += page.items
            if page.next is None:
                break
            cursor = page.next

    def text() -> str:
        if not items:
            return "no tokens"
        return "\n".join(
            f"{t['id']}  {t['device']}  created {t['created_at']}  "
            f"last used {t['last_used_at'] or 'never'}"
            for t in items
        )

    _print(args, {"items": items, "next": None}, text)
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        user_id = store.token_user(db, args.token_id)
        store.revoke_token(db, user_id, args.token_id)
    _print(
        args,
        {"id": args.token_id, "user_id": user_id, "revoked": True},
        f"token {args.token_id} revoked; its device is signed out",
    )
    return 0


def _address(value: str, settings: Settings, db: Database, user_id: str) -> str:
    """Parse with the user's own region first (their phone's country), then the
    deployment's default region: "(415) 555-0100" works for a US deployment's users
    wherever their own phone is from."""
    try:
        regions = [store.get_user(db, user_id).region]
    except NotFound:
        regions = []
    regions.append(settings.optin.default_region)
    try:
        return parse_in_regions(trust.parse_entry, value, regions)
    except AddressError as exc:
        raise UsageError(
            f"ADDRESS: {value!r} is not a phone number, email address or @domain: {exc.reason}"
        ) from None


def _region(settings: Settings, db: Database, user_id: str) -> str:
    return store.get_user(db, user_id).region or settings.optin.default_region


def cmd_optin_add(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        address = _address(args.address, settings, db, args.user_id)
        verdict = TrustVerdict.BLOCKED if args.block else TrustVerdict.TRUSTED
        record = trust.add(db, args.user_id, address, verdict)  # type: ignore[arg-type]
    _print(args, record.as_json(), f"{record.verdict} {record.address}")
    return 0


def cmd_optin_remove(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        address = _address(args.address, settings, db, args.user_id)
        trust.remove(db, args.user_id, address)  # type: ignore[arg-type]
    _print(args, {"removed": address}, f"removed {address}")
    return 0


def cmd_optin_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        entries = trust.list_entries(db, args.user_id)
    data = {"items": [e.as_json() for e in entries], "next": None}
    _print(
        args,
        data,
        lambda: (
            "\n".join(f"{e.verdict:8} {e.address}  ({e.source})" for e in entries)
            or "no trusted or blocked senders"
        ),
    )
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        store.get_user(db, args.user_id)
        items = _all_pages(
            lambda cursor: store.list_messages(
                db, args.user_id, Folder.QUARANTINE, limit=store.MAX_PAGE, cursor=cursor
            )
        )
    _print(
        args,
        {"items": items, "next": None},
        lambda: (
            "\n".join(
                f"{m['id']}  {m['received_at']}  {m['sender']}  {m['text'][:60]!r}  ({m['reason']})"
                for m in items
            )
            or "quarantine is empty"
        ),
    )
    return 0


def _review(args: argparse.Namespace, action: str) -> int:
    with _session(args) as (settings, db):
        user_id = store.owner_of_message(db, args.message_id)
        if action == "release":
            result = quarantine.release(db, user_id, args.message_id)
        else:
            result = quarantine.deny(
                db, DirectoryBlobStore(settings.storage.blob_dir), user_id, args.message_id
            )
    verb = "moved to the inbox" if action == "release" else "deleted"
    _print(
        args,
        {"sender": result.sender, "verdict": str(result.verdict), "messages": result.messages},
        f"{result.sender} is now {result.verdict}; {result.messages} held message(s) {verb}",
    )
    return 0


def cmd_quarantine_release(args: argparse.Namespace) -> int:
    return _review(args, "release")


def cmd_quarantine_deny(args: argparse.Namespace) -> int:
    return _review(args, "deny")


def cmd_quarantine_senders(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        region = _region(settings, db, args.user_id)
        items = _all_pages(
            lambda cursor: screener.cards(
                db,
                args.user_id,
                region=region,
                quarantine_days=settings.optin.quarantine_days,
                limit=store.MAX_PAGE,
                cursor=cursor,
            )
        )
    _print(
        args,
        {"items": items, "next": None},
        lambda: (
            "\n".join(
                f"{c['display']} <{c['sender']}>  {c['count']} held, latest "
                f"{c['latest']['received_at']}  {c['latest']['preview'][:50]!r}  "
                f"({c['reason']}; expires {c['expires_at']})"
                for c in items
            )
            or "nothing held"
        ),
    )
    return 0


def _screen(args: argparse.Namespace, action: str) -> int:
    with _session(args) as (settings, db):
        store.get_user(db, args.user_id)
        senders = [_address(s, settings, db, args.user_id) for s in args.senders]
        try:
            decide = screener.allow if action == "allow" else screener.block
            result = decide(db, args.user_id, senders)
        except ValueError as exc:
            raise UsageError(f"SENDER: {exc}") from None
    verb = "moved to the inbox" if action == "allow" else "discarded"
    _print(
        args,
        result.as_json(),
        f"{action}: {', '.join(result.senders)}; {result.messages} held message(s) {verb}",
    )
    return 0


def cmd_quarantine_allow(args: argparse.Namespace) -> int:
    return _screen(args, "allow")


def cmd_quarantine_block(args: argparse.Namespace) -> int:
    return _screen(args, "block")


def cmd_quarantine_undo(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        store.get_user(db, args.user_id)
        result = screener.undo(db, args.user_id, window_seconds=settings.optin.undo_seconds)
    _print(
        args,
        result.as_json(),
        f"undid {result.action} of "
        f"{', '.join(result.senders)}; {result.messages} message(s) held again",
    )
    return 0


def cmd_quarantine_expire(args: argparse.Namespace) -> int:
    with _session(args) as (settings, db):
        result = run_retention(settings, db, DirectoryBlobStore(settings.storage.blob_dir))
    _print(
        args,
        result.as_json(),
        f"{result.expired} held message(s) expired, {result.purged} blocked message(s) purged",
    )
    return 0


def cmd_contacts_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    with _session(args) as (settings, db):
        region = _region(settings, db, args.user_id)
        try:
            size = path.stat().st_size
            if size > settings.optin.max_contacts_bytes:
                raise ContactsTooLarge(
                    f"the file is {size:,} bytes; the limit is "
                    f"{settings.optin.max_contacts_bytes:,} bytes",
                    settings.optin.max_contacts_bytes,
                )
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"FILE: cannot read {path}: {exc.strerror}") from None
        report = parse_contacts(
            data,
            region=region,
            filename=path.name,
            max_bytes=settings.optin.max_contacts_bytes,
            max_contacts=settings.optin.max_contacts,
        )
        result = address_book.import_contacts(
            db, args.user_id, report, max_contacts=settings.optin.max_contacts
        )
    data_out = result.as_json()
    _print(
        args,
        data_out,
        lambda: "\n".join(
            [f"imported {result.imported} contact(s) ({report.format})"]
            + [
                f"  skipped {r['position']}: {r['name'] or ''} {r['value']!r}: {r['reason']}"
                for r in data_out["rejected"]
            ]
        ),
    )
    return 0


def cmd_contacts_list(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        store.get_user(db, args.user_id)
        items = _all_pages(
            lambda cursor: address_book.list_page(
                db, args.user_id, limit=store.MAX_PAGE, cursor=cursor
            )
        )
    _print(
        args,
        {"items": items, "next": None},
        lambda: (
            "\n".join(
                f"{c['id']}  {c['name']}  {' '.join(c['phones'] + c['emails'])}" for c in items
            )
            or "no contacts"
        ),
    )
    return 0


def cmd_contacts_optin(args: argparse.Namespace) -> int:
    if args.all == bool(args.contact_ids):
        raise UsageError("CONTACT_ID: name contacts, or give --all (not both)")
    with _session(args) as (_, db):
        store.get_user(db, args.user_id)
        added = address_book.opt_in(db, args.user_id, None if args.all else args.contact_ids)
    _print(args, {"added": added}, f"{added} sender(s) now trusted")
    return 0


def cmd_contacts_delete(args: argparse.Namespace) -> int:
    with _session(args) as (_, db):
        contacts, entries = address_book.delete_all(db, args.user_id, untrust=args.untrust)
    _print(
        args,
        {"contacts": contacts, "trusted_senders": entries},
        f"deleted {contacts} contact(s) and {entries} trust entr{'y' if entries == 1 else 'ies'}",
    )
    return 0


def cmd_dev_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    written = devtools.write_dev_config(path, force=args.force)
    _print(
        args,
        {"path": str(path), "written": written},
        f"wrote {path}" if written else f"{path} exists; left as is (use --force to replace)",
    )
    return 0


def cmd_dev_send_sms(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.bridges.twilio.enabled:
        raise UsageError("bridges.twilio.enabled is false; nothing would accept the webhook")
    status, body, sid = asyncio.run(
        devtools.send_test_sms(settings, sender=args.sender, to=args.to, body=args.body)
    )
    _print(
        args,
        {"status": status, "message_sid": sid, "response": body},
        f"HTTP {status} for {sid}: {body}",
    )
    return 0 if status == 200 else 1


def _bridge_config(settings: Settings) -> dict[str, dict[str, Any]]:
    """What an operator checks first about each bridge; no secret values, only
    whether they are set."""
    twilio, smtp = settings.bridges.twilio, settings.smtp
    return {
        "twilio": {
            "enabled": twilio.enabled,
            "webhook_url": f"{settings.http.public_url}/bridges/twilio/sms",
            "status_callback_url": f"{settings.http.public_url}/bridges/twilio/status",
            "account_sid": twilio.account_sid,
            "auth_token_set": bool(twilio.auth_token.get_secret_value()),
            "webhook_shared_keys": sorted(twilio.webhook_shared_keys),
            "api_base_url": twilio.api_base_url,
            "media_hosts": list(twilio.media_hosts),
            "media_max_bytes": twilio.media_max_bytes,
            "service_number": twilio.service_number or None,
        },
        "email": {
            "enabled": smtp.enabled,
            "listen": smtp.listen,
            "hostname": smtp.hostname,
            "max_message_bytes": smtp.max_message_bytes,
            "starttls": smtp.tls_cert is not None,
            "require_email_auth": settings.optin.require_email_auth,
            "outbound_relay": settings.email_out.relay if settings.email_out.enabled else None,
        },
    }


def _listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT such as 127.0.0.1:9101, got {value!r}"
        )
    return value


def _hours(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 24 * 366:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of hours from 1 to 8784, got {value!r}"
        )
    return int(value)


def cmd_bridges_status(args: argparse.Namespace) -> int:
    window = timedelta(hours=args.hours)
    with _session(args) as (settings, db):
        stats = bridge_stats(db, ("twilio", EMAIL_BRIDGE), window)
    config = _bridge_config(settings)
    report = [{**s.as_json(), "config": config[s.bridge]} for s in stats]

    def text() -> str:
        lines = []
        for item in report:
            state = "enabled" if item["config"]["enabled"] else "disabled"
            lines.append(f"{item['bridge']} ({state})")
            received = ", ".join(f"{k} {v}" for k, v in sorted(item["received"].items()))
            lines.append(f"  received: {received or 'nothing'}")
            lines.append(f"  received in the last {args.hours} h: {item['received_recent']}")
            if item["sent"]:
                sent = ", ".join(f"{k} {v}" for k, v in sorted(item["sent"].items()))
                lines.append(f"  sent: {sent}")
            lines.append(
                f"  attachments pending {item['attachments_pending']}, "
                f"failed {item['attachments_failed']}"
            )
            if item["bridge"] == EMAIL_BRIDGE:
                lines.append(f"  raw emails waiting to be parsed: {item['raw_pending']}")
            error = item["last_error"]
            lines.append(
                f"  last error: {error['at']} {error['what']}" if error else "  last error: none"
            )
            for key, value in item["config"].items():
                if key != "enabled":
                    lines.append(f"  {key} = {value}")
        return "\n".join(lines)

    _print(args, {"bridges": report}, text)
    return 0


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="path of optmsg.toml (default: $OPTMSG_CONFIG)")
    common.add_argument("--json", action="store_true", help="print one JSON document")

    parser = argparse.ArgumentParser(prog="optmsg", description="OptMsg gateway")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help_)
        p.set_defaults(fn=fn)
        return p

    p = add(sub, "serve", cmd_serve, "apply migrations and run the gateway")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run background jobs in this process: `optmsg worker` processes "
        "consume them from Redis (needs redis.url)",
    )
    p = add(sub, "worker", cmd_worker, "run background jobs from the Redis broker")
    p.add_argument(
        "--metrics",
        type=_listen_address,
        metavar="HOST:PORT",
        help="serve this worker's Prometheus /metrics there (jobs, queue depth, pool); "
        "with worker.processes N > 1, process i (0..N-1) serves on PORT+i",
    )

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    add(db, "upgrade", cmd_db_upgrade, "apply migrations")

    cfg = sub.add_parser("config", help="configuration").add_subparsers(
        dest="cfg_cmd", required=True
    )
    add(cfg, "check", cmd_config_check, "validate and print the effective config, secrets masked")

    users = sub.add_parser("users", help="accounts").add_subparsers(dest="users_cmd", required=True)
    p = add(users, "create", cmd_users_create, "create a user")
    p.add_argument("--first-name", required=True)
    p.add_argument("--last-name", required=True)
    p.add_argument("--dob", required=True, help="date of birth, YYYY-MM-DD")
    p.add_argument("--phone", required=True, help="the user's own mobile number")
    p.add_argument("--sms-number", help="OptMsg number whose inbound SMS go to this user")
    p.add_argument("--email-address", help="address whose inbound email goes to this user")
    p = add(users, "add-address", cmd_users_add_address, "route an OptMsg number or address")
    p.add_argument("user_id", metavar="ID")
    p.add_argument("--sms-number", help="OptMsg number whose inbound SMS go to this user")
    p.add_argument("--email-address", help="address whose inbound email goes to this user")
    add(users, "list", cmd_users_list, "list users")
    p = add(users, "delete", cmd_users_delete, "delete a user and all their data")
    p.add_argument("user_id", metavar="ID")
    p = add(users, "suspend", cmd_users_suspend, "suspend an account (breach of terms)")
    p.add_argument("user_id", metavar="ID")
    p = add(users, "unsuspend", cmd_users_unsuspend, "lift a suspension")
    p.add_argument("user_id", metavar="ID")
    p = add(users, "export", cmd_users_export, "write a user's data archive (zip) to a file")
    p.add_argument("user_id", metavar="ID")
    p.add_argument("--out", required=True, metavar="FILE.zip")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")

    abuse = sub.add_parser("abuse", help="IP addresses flagged for abuse").add_subparsers(
        dest="abuse_cmd", required=True
    )
    add(abuse, "list", cmd_abuse_list, "list flagged IPs (kept past the IP purge)")
    p = add(abuse, "clear", cmd_abuse_clear, "remove the flags of an IP")
    p.add_argument("ip", metavar="IP")

    spool = sub.add_parser("spool", help="the webhook spool").add_subparsers(
        dest="spool_cmd", required=True
    )
    add(spool, "dead", cmd_spool_dead, "list webhooks the spool could never store")
    add(spool, "requeue", cmd_spool_requeue, "put the dead letters back in the spool for replay")

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_cmd", required=True
    )
    p = add(tokens, "create", cmd_tokens_create, "issue a client API token")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--name", default="cli", help="label shown in the user's device list")
    p = add(tokens, "list", cmd_tokens_list, "list a user's tokens (signed-in devices)")
    p.add_argument("user_id", metavar="USER_ID")
    p = add(tokens, "revoke", cmd_tokens_revoke, "revoke a token (sign its device out)")
    p.add_argument("token_id", metavar="TOKEN_ID")

    optin = sub.add_parser("optin", help="trusted senders").add_subparsers(
        dest="optin_cmd", required=True
    )
    p = add(optin, "add", cmd_optin_add, "trust (or --block) a sender")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("address", metavar="ADDRESS", help="phone number in any common format, or email")
    p.add_argument("--block", action="store_true", help="block instead of trust")
    p = add(optin, "remove", cmd_optin_remove, "remove a sender from the list")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("address", metavar="ADDRESS")
    p = add(optin, "list", cmd_optin_list, "list trusted and blocked senders")
    p.add_argument("user_id", metavar="USER_ID")

    q = sub.add_parser("quarantine", help="held messages").add_subparsers(
        dest="q_cmd", required=True
    )
    p = add(q, "list", cmd_quarantine_list, "list a user's held messages")
    p.add_argument("user_id", metavar="USER_ID")
    p = add(
        q,
        "release",
        cmd_quarantine_release,
        "trust the sender; move their held messages to the inbox",
    )
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p = add(q, "deny", cmd_quarantine_deny, "block the sender; delete their held messages")
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p = add(q, "senders", cmd_quarantine_senders, "the screener: held messages by sender")
    p.add_argument("user_id", metavar="USER_ID")
    p = add(q, "allow", cmd_quarantine_allow, "trust senders; move their held mail to the inbox")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("senders", metavar="SENDER", nargs="+")
    p = add(q, "block", cmd_quarantine_block, "block senders; discard their held mail")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("senders", metavar="SENDER", nargs="+")
    p = add(q, "undo", cmd_quarantine_undo, "undo the user's latest allow/block")
    p.add_argument("user_id", metavar="USER_ID")
    add(q, "expire", cmd_quarantine_expire, "run the retention job now (all users)")

    contacts = sub.add_parser("contacts", help="address books").add_subparsers(
        dest="contacts_cmd", required=True
    )
    p = add(contacts, "import", cmd_contacts_import, "import a vCard, CSV or JSON address book")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("file", metavar="FILE")
    p = add(contacts, "list", cmd_contacts_list, "list a user's contacts")
    p.add_argument("user_id", metavar="USER_ID")
    p = add(contacts, "optin", cmd_contacts_optin, "trust contacts' numbers and addresses")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("contact_ids", metavar="CONTACT_ID", nargs="*")
    p.add_argument("--all", action="store_true", help="every contact")
    p = add(contacts, "delete", cmd_contacts_delete, "delete the whole address book")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument(
        "--untrust", action="store_true", help="also remove trust entries that came from it"
    )

    bridges = sub.add_parser("bridges", help="provider bridges").add_subparsers(
        dest="bridges_cmd", required=True
    )
    p = add(bridges, "status", cmd_bridges_status, "per-bridge counts, last error, config summary")
    p.add_argument(
        "--hours", type=_hours, default=24, metavar="HOURS", help="what counts as recent (24)"
    )

    dev = sub.add_parser("dev", help="development helpers").add_subparsers(
        dest="dev_cmd", required=True
    )
    p = add(dev, "init", cmd_dev_init, "write a local optmsg.toml with fresh random secrets")
    p.add_argument("--path", default="optmsg.toml")
    p.add_argument("--force", action="store_true")
    p = add(dev, "send-sms", cmd_dev_send_sms, "sign and post a test inbound SMS to the gateway")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", required=True, help="the user's OptMsg SMS number")
    p.add_argument("--body", default="Hello from optmsg dev send-sms")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "db":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"optmsg: config error: {exc.key}: {exc.message}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"optmsg: {exc}", file=sys.stderr)
        return 2
    except NotFound as exc:
        print(f"optmsg: not found: {exc}", file=sys.stderr)
        return 1
    except (InboxError, OptinError) as exc:
        print(f"optmsg: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        print(f"optmsg: database error: {exc.orig or exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"optmsg: could not reach the gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
