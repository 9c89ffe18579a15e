"""Typed settings: ``optmsg.toml`` overlaid by ``OPTMSG_<SECTION>__<KEY>`` env vars.

One :class:`Settings` object is built at start by :func:`load_settings` and handed
down; nothing reads the environment after that.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.errors import ConfigError, ConfigFileError

ENV_PREFIX = "OPTMSG_"
CONFIG_PATH_ENV = "OPTMSG_CONFIG"
# Variables with our prefix that are not settings (read by tooling, not by Settings).
# OPTMSG_WORKER_SUPERVISOR: set by `optmsg worker` in the environment of its children.
_NON_SETTING_ENV = frozenset(
    {"OPTMSG_CONFIG", "OPTMSG_REQUIRE_SERVICES", "OPTMSG_TEST_PG_URL", "OPTMSG_WORKER_SUPERVISOR"}
)

# Values people paste from examples and tutorials; starting on one of them would mean
# anyone who read the same tutorial can forge webhooks.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "your_auth_token",
        "your-auth-token",
        "auth_token",
        "xxx",
        "todo",
    }
)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return value


def _nameserver(value: str) -> tuple[str, int]:
    """A DNS server given as "IP", "IP:PORT" or "[IPv6]:PORT" -> (IP, port)."""
    text, port_text = value.strip(), "53"
    if text.startswith("["):
        address, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected IP, IP:PORT or [IPv6]:PORT, got {value!r}")
        if rest:
            port_text = rest[1:]
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
    else:
        address = text
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the port of {value!r} must be a number from 1 to 65535")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (a name would need DNS itself)") from None
    return str(ip), int(port_text)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    # Twilio caps an SMS body at 1,600 characters; a full webhook form is a few KB.
    max_webhook_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_api_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Origins allowed to call /api/v1 from a browser (CORS); empty: CORS off.
    cors_origins: list[str] = Field(default_factory=list, max_length=100)
    # Reverse proxies / load balancers (IP addresses or CIDR networks) whose
    # X-Forwarded-For names the client; empty: trust none, the peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=100)
    # HOST:PORT of a listener that serves only /metrics; when set, /metrics is not
    # served on `listen` (keep the figures off the port the internet reaches).
    metrics_listen: str = ""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _host_port(v)

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, v: str) -> str:
        return _host_port(v) if v else v

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL such as https://gw.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        return v.rstrip("/")

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, v: list[str]) -> list[str]:
        return [_origin(item) for item in v]

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, v: list[str]) -> list[str]:
        return [_network(item) for item in v]


def _network(value: str) -> str:
    """An IP address or CIDR network, normalised ("10.0.0.0/8", "2001:db8::/32"). A
    network with host bits set is refused: "10.0.0.1/8" is more likely a typo than a
    wish to trust all of 10.0.0.0/8."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IP address or CIDR network ({exc}); "
            "expected e.g. 10.0.0.5, 10.0.0.0/8 or fd00::/8"
        ) from None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> str:
    """A web origin as browsers send it in ``Origin``: scheme://host[:port], lower case,
    the scheme's default port left out. "*" is refused: the API serves the operator's
    own web apps, and each should be named, so that allowing another is a decision."""
    if value.strip() == "*":
        raise ValueError('"*" is not accepted; list each web app\'s origin')
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or not parts.hostname.isascii()
        or parts.username is not None
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or value.endswith("?")
        or value.endswith("#")
    ):
        raise ValueError(
            f"{value!r} is not an origin: expected scheme://host[:port] "
            "(http or https, an ASCII or punycode host, no path), e.g. https://app.example.com"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class SmtpSettings(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:2525"
    hostname: str = "localhost"
    max_message_bytes: int = Field(default=26_214_400, ge=1024, le=1024 * 1024 * 1024)
    max_recipients: int = Field(default=100, ge=1, le=10_000)
    max_header_bytes: int = Field(default=100 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Lines over RFC 5321's 998 octets are common in generated HTML mail; accepted
    # up to this bound, as Postfix does.
    max_line_bytes: int = Field(default=1024 * 1024, ge=1000, le=64 * 1024 * 1024)
    max_mime_depth: int = Field(default=100, ge=1, le=10_000)
    max_mime_parts: int = Field(default=1000, ge=1, le=1_000_000)
    # The name in our Authentication-Results header; incoming headers claiming it are
    # removed. Empty: the hostname.
    authserv_id: str = ""
    # PEM files; when both are set the server offers STARTTLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dns_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Recursive resolvers for the SPF/DKIM/DMARC lookups, as "IP" or "IP:PORT"
    # ("[IPv6]:PORT"), asked in order; empty: the system's (/etc/resolv.conf).
    dns_servers: list[str] = Field(default_factory=list, max_length=10)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        return _host_port(v)

    @field_validator("dns_servers")
    @classmethod
    def _check_dns_servers(cls, v: list[str]) -> list[str]:
        for server in v:
            _nameserver(server)
        return v

    def nameservers(self) -> list[tuple[str, int]] | None:
        """``dns_servers`` as (IP, port) pairs; None: use the system's resolvers."""
        return [_nameserver(server) for server in self.dns_servers] or None

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert: tls_cert and tls_key must be set together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {str(path)!r} is not a readable file")
        return self

    @property
    def effective_authserv_id(self) -> str:
        return self.authserv_id or self.hostname


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/optmsg.db"
    # Connections each engine keeps open; also a gateway's read threads (see
    # config.pools for how the pool is sized against a process's threads).
    pool_size: int = Field(default=5, ge=1, le=200)
    # Connections an engine may open beyond pool_size (closed again when returned).
    max_overflow: int = Field(default=20, ge=0, le=1000)
    # How long a thread waits for a free connection before its work fails.
    pool_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Group commit: at most this many inbound messages share one transaction.
    batch_max: int = Field(default=256, ge=1, le=10_000)
    busy_timeout_ms: int = Field(default=10_000, ge=0, le=600_000)
    # SQLite: small index-bounded reads of the client API (token lookup, a page of
    # messages) run on the event loop instead of a pool thread (faster; see
    # gateway.api_support.quick_read). Ignored for PostgreSQL.
    inline_reads: bool = True

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        scheme = v.split(":", 1)[0]
        if not v.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH or postgresql://..."
            )
        return v


class RedisSettings(_Section):
    url: str = ""
    # Prefix of the job queues' keys: two deployments (or test runs) can share one
    # Redis without taking each other's jobs.
    namespace: str = Field(default="optmsg", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be empty (in-process broker) or a redis:// URL")
        return v


class StorageSettings(_Section):
    blob_dir: Path = Path("var/blobs")


class SpoolSettings(_Section):
    """The local durable spool for verified webhooks while the database is down
    (gateway.spool_replay). Each gateway process takes its own slot under ``dir``."""

    dir: Path = Path("var/spool")
    # All slots' unreplayed bytes of this process; a webhook that would pass it is
    # answered 503 (the only case the spool gives up).
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=1024**4)
    # How often a non-empty spool is offered to the database again.
    replay_interval_s: float = Field(default=2.0, gt=0, le=300)
    # The longest a webhook waits for the store before its message is spooled instead;
    # well under Twilio's 15 s webhook timeout.
    store_timeout_s: float = Field(default=5.0, gt=0, le=12)


class TwilioSettings(_Section):
    enabled: bool = True
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    # SharedKey webhook signing (HMAC-SHA256): key id -> secret. Several ids allow rotation.
    webhook_shared_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # The connection-override fragment configured on Twilio's side (without '#'),
    # e.g. "rc=5&rp=ct,rt,5xx"; signatures over the URL with it are accepted too.
    webhook_url_fragment: str = Field(default="", max_length=200)
    api_base_url: str = "https://api.twilio.com"
    media_hosts: list[str] = Field(default_factory=lambda: ["api.twilio.com", "mms.twiliocdn.com"])
    # MMS media fetching (SSRF-safe: only media_hosts, https, public addresses).
    media_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    # Media types kept; "type/*" allowed. Empty: the built-in list (no SVG, no HTML).
    media_types: list[str] = Field(default_factory=list)
    media_allow_http: bool = False  # tests and labs only
    media_allow_private: bool = False  # never metadata addresses, even when true
    media_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Attempts per message's media before what is still missing is marked failed.
    media_attempts: int = Field(default=5, ge=1, le=20)
    # Delete the media from Twilio once stored here (data minimisation).
    media_delete_after_fetch: bool = False
    # A shared number users text their commands to (TRUST/BLOCK/LIST/HELP) from their
    # verified mobile; empty: commands go to the user's own OptMsg number only.
    service_number: str = Field(default="", max_length=32)
    # Answer to a counterpart who texts HELP (carriers require one).
    help_reply: str = Field(
        default="OptMsg: this number delivers messages to an OptMsg inbox. "
        "Reply STOP to stop, START to resume.",
        min_length=1,
        max_length=320,
    )

    @field_validator("media_types")
    @classmethod
    def _check_media_types(cls, v: list[str]) -> list[str]:
        for pattern in v:
            kind, sep, sub = pattern.partition("/")
            if not sep or not kind or not sub or "*" in kind or (sub != "*" and "*" in sub):
                raise ValueError(f"{pattern!r} is not a media type such as image/png or video/*")
        return [p.lower() for p in v]

    @field_validator("service_number")
    @classmethod
    def _check_service_number(cls, v: str) -> str:
        if not v:
            return v
        try:
            number = phonenumbers.parse(v, None)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            raise ValueError("must be a phone number in E.164 form, e.g. +14155550100")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("account_sid")
    @classmethod
    def _check_sid(cls, v: str) -> str:
        if v and (not v.startswith("AC") or len(v) != 34):
            raise ValueError("must be a Twilio account SID: 'AC' followed by 32 hex digits")
        return v

    @field_validator("api_base_url")
    @classmethod
    def _check_api_base(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        return v.rstrip("/")


class BridgesSettings(_Section):
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)


class OptinSettings(_Section):
    default_region: str = "US"
    # Quarantine (not admit) email from a trusted address that failed SPF/DKIM/DMARC.
    require_email_auth: bool = True
    # Held messages are deleted this many days after they arrived.
    quarantine_days: int = Field(default=30, ge=1, le=3650)
    # How long a screener allow/block can be undone; a block deletes the held
    # messages for good only after this.
    undo_seconds: int = Field(default=60, ge=0, le=86_400)
    # How often the retention job (expiry, purge of blocked mail) runs.
    retention_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    # A counterpart the user sends a message to becomes trusted.
    auto_trust_sent_to: bool = True
    # Largest address book upload (vCard, CSV or JSON) and most contacts per user.
    max_contacts_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    max_contacts: int = Field(default=50_000, ge=1, le=1_000_000)

    @field_validator("default_region")
    @classmethod
    def _check_region(cls, v: str) -> str:
        region = v.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {v!r}: use an ISO 3166 code such as US or GB")
        return region


class AuthSettings(_Section):
    """Sign-up and sign-in by a code sent by SMS."""

    # Where codes go: "twilio" sends an SMS from bridges.twilio.service_number;
    # "console" prints them to the gateway's output (development only); "auto" is
    # twilio when that bridge is enabled with a service number, else console.
    code_sender: Literal["auto", "twilio", "console"] = "auto"
    code_ttl_s: int = Field(default=600, ge=30, le=3600)
    # Wrong guesses allowed for one code before it is void.
    code_attempts: int = Field(default=5, ge=1, le=20)
    # Limits on code requests and guesses, per mobile number and per client IP,
    # within a sliding window; past them the answer is 429 with Retry-After.
    window_s: int = Field(default=3600, ge=60, le=86_400)
    codes_per_number: int = Field(default=5, ge=1, le=1000)
    codes_per_ip: int = Field(default=20, ge=1, le=100_000)
    attempts_per_ip: int = Field(default=50, ge=1, le=100_000)
    # Keys the HMAC that replaces numbers and IPs in rate-limit keys (Redis never
    # holds a number). Empty: a random key per process, fine without Redis; gateway
    # processes sharing a Redis need the same value.
    limit_key: SecretStr = SecretStr("")
    # A token's owner is remembered this long by each gateway process, so that most
    # API requests need no token lookup. Revoking a token or deleting the account
    # through the API takes effect at once in the process that handled it; on other
    # gateway processes, and for suspensions (CLI), within this many seconds. 0: off.
    token_cache_s: float = Field(default=5.0, ge=0, le=60)


class PrivacySettings(_Section):
    # IP addresses in the authentication log are erased after this many days
    # (those flagged for abuse are kept and listed for operators).
    ip_log_days: int = Field(default=7, ge=1, le=365)
    # Failed code attempts from one IP, within auth.window_s, that flag it for abuse.
    abuse_failed_codes: int = Field(default=20, ge=1, le=100_000)
    # A flag (and so the IP addresses it keeps from the purge) is dropped this many
    # days after the flagged address was last seen misbehaving.
    abuse_keep_days: int = Field(default=90, ge=1, le=3650)
    # How long a finished data export can be downloaded.
    export_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)


class EmailOutSettings(_Section):
    """Outbound email goes through the operator's SMTP relay."""

    enabled: bool = False
    relay: str = "127.0.0.1:25"
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = True
    timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Attachments of an email draft: all of them together at most this many bytes,
    # and only these media types ("type/*" allowed; empty: the built-in list).
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    attachment_types: list[str] = Field(default_factory=list)

    @field_validator("relay")
    @classmethod
    def _check_relay(cls, v: str) -> str:
        return _host_port(v)

    @field_validator("attachment_types")
    @classmethod
    def _check_attachment_types(cls, v: list[str]) -> list[str]:
        return TwilioSettings._check_media_types(v)


class EventsSettings(_Section):
    """Live updates to connected clients (GET /api/v1/events, Server-Sent Events)."""

    # Events are kept this long for clients that reconnect with Last-Event-ID; one
    # further behind is told to refetch (a ``reset`` event).
    keep_hours: int = Field(default=24, ge=1, le=24 * 30)
    # Open streams per user on one gateway process; one more is answered 429.
    max_clients_per_user: int = Field(default=10, ge=1, le=10_000)
    # Open streams of all users on one gateway process (each holds a connection and
    # up to 1 MiB of queued events); one more is answered 503 with Retry-After.
    max_streams: int = Field(default=10_000, ge=1, le=1_000_000)
    # Events replayed to a reconnecting client before it is told to refetch instead.
    replay_max: int = Field(default=500, ge=1, le=100_000)
    # A comment line this often keeps proxies from closing an idle stream; the
    # stream's token is checked again at this pace (at most every 15 s), busy or not:
    # a revoked token or a suspended account ends it.
    keepalive_s: float = Field(default=15.0, ge=1, le=300)
    # How often each process looks for events written elsewhere (the CLI, workers,
    # another gateway process without Redis).
    poll_interval_s: float = Field(default=2.0, ge=0.1, le=60)
    # The Redis pub/sub channel that carries "user X has new events" between gateway
    # processes when redis.url is set.
    redis_channel: str = Field(default="optmsg:events", min_length=1, max_length=100)


class WorkerSettings(_Section):
    """Background jobs: ``optmsg worker`` and the in-process worker of ``optmsg serve``."""

    # Jobs run at once per process (dramatiq worker threads); each may hold a
    # database connection, so database.pool_size + max_overflow must cover them.
    threads: int = Field(default=8, ge=1, le=256)
    # `optmsg worker` processes of `threads` threads each, run by one supervisor
    # (gateway.worker_supervisor); each process has its own database pool.
    processes: int = Field(default=1, ge=1, le=64)
    # Every `optmsg serve` sweeps for jobs lost with the broker (a Redis restart, a
    # killed worker) this often, and enqueues again media still pending longer than
    # two fetch timeouts plus sweep_grace_s: together they bound the recovery time.
    sweep_interval_s: float = Field(default=60.0, gt=0, le=3600)
    sweep_grace_s: float = Field(default=60.0, ge=0, le=3600)


class LimitsSettings(_Section):
    """Rate limits shared by every gateway process through Redis when ``redis.url`` is
    set (each process alone otherwise); see README "Rate limits"."""

    # Inbound messages from one sender to one recipient address within a sliding
    # window; the ones over it are still stored, but held in quarantine with a
    # "flood" reason and without a live event (the first held one excepted).
    sender_messages: int = Field(default=30, ge=1, le=1_000_000)
    sender_window_s: int = Field(default=60, ge=1, le=86_400)
    # A sender on the user's trusted list is delivered whatever its rate (its
    # messages still count, so that a flood is visible once it is untrusted).
    trusted_exempt: bool = True
    # Client API requests (/api/v1/...) per client IP (IPv6: per /64) within a
    # sliding window; one more is answered 429 with Retry-After. 0: no limit.
    api_requests_per_ip: int = Field(default=600, ge=0, le=10_000_000)
    api_window_s: int = Field(default=60, ge=1, le=86_400)
    # With Redis, each process decides from its own counts plus the others' as of
    # the last exchange, which happens this often (one round trip for all keys): a
    # limit can be overshot by what the processes see in one interval.
    sync_interval_s: float = Field(default=0.25, ge=0.01, le=10)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "console"


class Settings(BaseSettings):
    """The whole configuration. Immutable; compare by value; secrets print as ``**********``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        # Set by load_settings(); never read from the environment.
        toml_file=None,
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    bridges: BridgesSettings = Field(default_factory=BridgesSettings)
    optin: OptinSettings = Field(default_factory=OptinSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    email_out: EmailOutSettings = Field(default_factory=EmailOutSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        twilio = self.bridges.twilio
        if twilio.enabled:
            if not twilio.account_sid:
                raise ValueError(
                    "bridges.twilio.account_sid: must be set while the bridge is enabled"
                )
            if _is_placeholder(twilio.auth_token):
                raise ValueError(
                    "bridges.twilio.auth_token: empty, too short or a placeholder while the "
                    "bridge is enabled; set the real Auth Token "
                    "(env OPTMSG_BRIDGES__TWILIO__AUTH_TOKEN)"
                )
            for key_id, secret in twilio.webhook_shared_keys.items():
                if _is_placeholder(secret):
                    raise ValueError(
                        f"bridges.twilio.webhook_shared_keys.{key_id}: empty, too short or a "
                        "placeholder"
                    )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret replaced by ``***``."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="python"))
        return masked


def _is_placeholder(secret: SecretStr) -> bool:
    value = secret.get_secret_value()
    return value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < 16


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _check_env_names(environ: Mapping[str, str]) -> None:
    sections = set(Settings.model_fields)
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name in _NON_SETTING_ENV:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                name, f"unknown setting section {section!r}; known: {', '.join(sorted(sections))}"
            )


def load_settings(path: Path | str | None = None, *, use_env_path: bool = True) -> Settings:
    """Build the settings from a TOML file (``path``, else ``$OPTMSG_CONFIG``, else none) and env.

    Raises :class:`ConfigError` naming the dotted key of the first bad value; the error text
    never contains the value itself, so a mistyped secret is not echoed to a terminal or log.
    """
    if path is None and use_env_path:
        env_path = os.environ.get(CONFIG_PATH_ENV)
        path = Path(env_path) if env_path else None
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigFileError(CONFIG_PATH_ENV, f"config file {str(toml_path)!r} does not exist")
        import tomllib

        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(str(toml_path), f"not valid TOML: {exc}") from None
    _check_env_names(os.environ)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=toml_path)

    try:
        loaded = _FromFile()
    except ValidationError as exc:
        raise _config_error(exc) from None
    # Hand out a plain Settings (already validated) so that values compare by value.
    return Settings.model_construct(
        **{name: getattr(loaded, name) for name in Settings.model_fields}
    )


def _config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = tuple(err["loc"])
    msg = str(err["msg"])
    # Model-level validators report "field: reason"; fold the field into the key.
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    head, sep, rest = msg.partition(": ")
    if sep and " " not in head and head:
        loc = (*loc, head)
        msg = rest
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    return ConfigError(_dotted(loc), msg)


class _InitOnly(Settings):
    """Validates a complete settings mapping without reading the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def validate_settings(data: Mapping[str, Any]) -> Settings:
    """Settings from plain data (e.g. a ``model_dump()`` with some values replaced),
    validated like :func:`load_settings` and with the same :class:`ConfigError`; the
    environment and files are not read."""
    try:
        checked = _InitOnly(**data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    return Settings.model_construct(
        **{name: getattr(checked, name) for name in Settings.model_fields}
    )
