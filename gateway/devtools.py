"""Developer conveniences: write a local config with fresh secrets; sign and post a
test SMS webhook to a running gateway, exactly as Twilio would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from bridges.twilio import signing_payload
from config import Settings

DEV_CONFIG = """\
# Local development config written by `optmsg dev init`. Secrets here are random
# and only good for this machine; production reads real ones from env vars.
[http]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[smtp]
listen = "127.0.0.1:2525"
hostname = "localhost"

[database]
url = "sqlite:///var/optmsg.db"

[redis]
url = ""

[storage]
blob_dir = "var/blobs"

[bridges.twilio]
enabled = true
account_sid = "{account_sid}"
auth_token = "{auth_token}"

[optin]
default_region = "US"
"""


def write_dev_config(path: Path, *, force: bool = False) -> bool:
    """Write a development ``optmsg.toml``; returns False when one exists already."""
    if path.exists() and not force:
        return False
    text = DEV_CONFIG.format(
        account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the first byte: the file holds a secret.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def sign(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    mac = hmac.new(auth_token.encode("utf-8"), signing_payload(url, params), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def inbound_sms_form(
    *, sid: str, sender: str, to: str, body: str, account_sid: str
) -> list[tuple[str, str]]:
    """The parameters Twilio posts for one inbound SMS (the fields its webhook sends)."""
    return [
        ("ToCountry", "US"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("SmsSid", sid),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", to),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", account_sid),
        ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]


async def send_test_sms(
    settings: Settings, *, sender: str, to: str, body: str, message_sid: str | None = None
) -> tuple[int, str, str]:
    """POST a signed inbound-SMS webhook to ``public_url``; returns (status, body, sid)."""
    sid = message_sid or "SM" + secrets.token_hex(16)
    tw = settings.bridges.twilio
    params = inbound_sms_form(sid=sid, sender=sender, to=to, body=body, account_sid=tw.account_sid)
    url = settings.http.public_url + "/bridges/twilio/sms"
    headers = {
        "X-Twilio-Signature": sign(url, params, tw.auth_token.get_secret_value()),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=urlencode(params), headers=headers) as resp,
    ):
        return resp.status, await resp.text(), sid
