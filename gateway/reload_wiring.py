"""Which settings ``optmsg serve`` and ``optmsg worker`` take on a reload, and how.

Every key named here is really applied when it changes: either its users read it
from ``LiveSettings.current`` on each use (:data:`READ_PER_USE`), or a callback
below hands the new value to the object that copied it at start. Keys not named
here (listen addresses, the database, Redis, the blob directory, bridge and SMTP
on/off switches, SMTP limits, ...) need a restart; a reload logs them as such.
"""

from __future__ import annotations

import dataclasses
import logging

from bridges.codes import TwilioCodeSender
from bridges.twilio import SignatureVerifier, TwilioBridge
from config import Settings
from gateway.accounts import AuthRuntime, code_sender, limit_key
from gateway.client_ip import parse_networks
from gateway.jobs import Jobs
from gateway.live import EventHub
from gateway.logs import configure_logging
from gateway.pipeline import IngestPipeline
from gateway.ratelimit import KeyHasher
from gateway.reload import LiveSettings

log = logging.getLogger(__name__)

# Read from LiveSettings.current by the HTTP handlers (per request) and the retention
# loop (per run) of a gateway process.
READ_PER_USE = (
    "http.max_api_body_bytes",
    "optin.quarantine_days",
    "optin.undo_seconds",
    "optin.retention_interval_s",
    "optin.max_contacts_bytes",
    "optin.max_contacts",
    "auth.code_ttl_s",
    "auth.code_attempts",
    "auth.window_s",
    "auth.codes_per_number",
    "auth.codes_per_ip",
    "auth.attempts_per_ip",
    "privacy.ip_log_days",
    "privacy.abuse_failed_codes",
    "privacy.abuse_keep_days",
    "privacy.export_ttl_hours",
    "events.replay_max",
    "events.keep_hours",
    "email_out.max_attachment_bytes",
    "email_out.attachment_types",
)

WEBHOOK_KEYS = (
    "http.max_webhook_bytes",
    "bridges.twilio.auth_token",
    "bridges.twilio.webhook_shared_keys",
    "bridges.twilio.webhook_url_fragment",
)

JOB_KEYS = (
    "bridges.twilio.media_hosts",
    "bridges.twilio.media_max_bytes",
    "bridges.twilio.media_types",
    "bridges.twilio.media_timeout_s",
    "bridges.twilio.media_attempts",
    "bridges.twilio.media_delete_after_fetch",
    "bridges.twilio.auth_token",
    "optin.auto_trust_sent_to",
    "privacy.export_ttl_hours",
)

LOG_KEYS = ("log.level", "log.format")


def signature_verifier(settings: Settings) -> SignatureVerifier:
    """The Twilio webhook signature check for ``settings`` (auth token, shared keys)."""
    tw = settings.bridges.twilio
    return SignatureVerifier(
        public_url=settings.http.public_url,
        auth_token=tw.auth_token.get_secret_value().encode("utf-8"),
        shared_keys={
            k: v.get_secret_value().encode("utf-8") for k, v in tw.webhook_shared_keys.items()
        },
        url_fragment=tw.webhook_url_fragment.lstrip("#"),
    )


def reload_logging(live: LiveSettings) -> None:
    """``log.level`` and ``log.format`` take effect at once."""
    live.on_reload(lambda new: configure_logging(new.log), *LOG_KEYS)


def reload_jobs(live: LiveSettings, jobs: Jobs) -> None:
    """Media rules, the Twilio auth token of REST calls and job knobs (both
    ``optmsg serve``'s in-process worker and ``optmsg worker``)."""
    live.on_reload(jobs.retune, *JOB_KEYS)


def reload_webhooks(live: LiveSettings, bridge: TwilioBridge) -> None:
    """The Twilio webhooks' signature check and body limit."""

    def apply(new: Settings) -> None:
        # Each attribute is read once per request: a request sees the old or the
        # new value, never a mix within one check.
        bridge.verifier = signature_verifier(new)
        bridge.max_body_bytes = new.http.max_webhook_bytes

    live.on_reload(apply, *WEBHOOK_KEYS)


def reload_policy(live: LiveSettings, pipeline: IngestPipeline) -> None:
    """The opt-in policy of the ingest pipeline (the next batch decides with it)."""

    def apply(new: Settings) -> None:
        # Only this knob: the policy's other fields keep what they were built with.
        pipeline.policy = dataclasses.replace(
            pipeline.policy, require_email_auth=new.optin.require_email_auth
        )

    live.on_reload(apply, "optin.require_email_auth")


def reload_hub(live: LiveSettings, hub: EventHub) -> None:
    """The live-update stream limits."""
    live.on_reload(
        lambda new: hub.retune(new.events), "events.max_clients_per_user", "events.max_streams"
    )


def reload_auth(live: LiveSettings, auth: AuthRuntime) -> None:
    """Client address resolution, and what the Twilio auth token feeds in sign-in."""

    def proxies(new: Settings) -> None:
        auth.proxies = parse_networks(new.http.trusted_proxies)

    live.on_reload(proxies, "http.trusted_proxies")

    def auth_token(new: Settings) -> None:
        # Sign-in codes go out with the new token. The old sender is left to the
        # collector rather than closed: a code may be on its way through it.
        if isinstance(auth.sender, TwilioCodeSender):
            auth.sender = code_sender(new)
        # A rate-limit key derived from the token follows it, so that gateways
        # sharing a Redis count alike once each has reloaded (counts restart).
        if not new.auth.limit_key.get_secret_value():
            auth.keys = KeyHasher(limit_key(new))

    live.on_reload(auth_token, "bridges.twilio.auth_token")


def reload_gateway(
    live: LiveSettings,
    *,
    bridge: TwilioBridge | None,
    jobs: Jobs,
    pipeline: IngestPipeline,
    hub: EventHub,
    auth: AuthRuntime,
) -> None:
    """Everything a gateway process takes on a reload (see the module's docstring)."""
    live.reloadable(*READ_PER_USE)
    reload_jobs(live, jobs)
    if bridge is not None:
        reload_webhooks(live, bridge)
    reload_policy(live, pipeline)
    reload_hub(live, hub)
    reload_auth(live, auth)
