"""Reloading the configuration while a process runs (``kill -HUP``).

Each process holds its settings in one :class:`LiveSettings`. Request handlers and
jobs read ``live.current`` when they need a value: one attribute load, no lock (the
reference is replaced whole, never mutated). A reload re-reads the file and the
environment and validates them exactly as at start. Only keys declared reloadable
take their new value; every other changed key keeps its running value and is
logged as needing a restart, so ``current`` is always what is actually in force.

A key becomes reloadable in one of two ways, and only where it is really applied:

- :meth:`LiveSettings.reloadable` for keys read from ``current`` on every use (a
  handler reading ``current.http.max_api_body_bytes``);
- :meth:`LiveSettings.on_reload` for keys copied into an object at start: the
  callback receives the new settings and hands the changed values to that object.

A reload that fails (bad TOML, a refused value, a callback raising) changes nothing:
the error is logged with the key's name, never its value, and counted in
``optmsg_config_reloads_total{result="error"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from config import ConfigError, Settings
from config.settings import validate_settings

log = logging.getLogger(__name__)

Loader = Callable[[], Settings]
Callback = Callable[[Settings], None]


class ReloadFailed(Exception):
    """Raised when a reload callback could not apply the new settings; the previous
    settings were put back. ``key`` names the first changed key of that callback."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What one successful reload did: the keys now in force with their new value,
    and the changed keys that keep their running value until a restart."""

    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Subscriber:
    callback: Callback
    keys: tuple[str, ...]


def leaves(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Every setting as ``dotted.key -> value``; tables that are values (e.g.
    ``webhook_shared_keys``) are one key."""
    found: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            found.update(leaves(value, key + "."))
        else:
            found[key] = value
    return found


def _covers(pattern: str, key: str) -> bool:
    # A pattern is a key or a whole section ("limits" covers "limits.per_ip").
    return key == pattern or key.startswith(pattern + ".")


def _with_values(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        node[last] = value
    return data


class LiveSettings:
    """The settings in force in this process, and what to do when they change."""

    __slots__ = ("_reloadable", "_reloads", "_subscribers", "current")

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.current = settings
        self._reloadable: list[str] = []
        self._subscribers: list[_Subscriber] = []
        self._reloads = Counter(
            "optmsg_config_reloads",
            "Configuration reloads (SIGHUP) by result: ok, or error (the running "
            "configuration kept)",
            ["result"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        for result in ("ok", "error"):
            self._reloads.labels(result)

    def reloadable(self, *keys: str) -> None:
        """Declare ``keys`` (dotted keys or whole sections) reloadable because their
        users read them from :attr:`current` each time."""
        self._reloadable.extend(keys)

    def on_reload(self, callback: Callback, *keys: str) -> None:
        """Call ``callback(new_settings)`` after a reload that changed one of ``keys``
        (dotted keys or whole sections), which become reloadable: the callback is
        what applies them. It runs on the thread that reloads (the event loop in
        ``optmsg serve``), so it should only swap references, and it must not fail
        for a value the settings accepted."""
        if not keys:
            raise ValueError("on_reload needs the keys the callback applies")
        self._subscribers.append(_Subscriber(callback, keys))
        self._reloadable.extend(keys)

    def is_reloadable(self, key: str) -> bool:
        return any(_covers(pattern, key) for pattern in self._reloadable)

    @property
    def reloadable_keys(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._reloadable)))

    def reload(self, load: Loader) -> ReloadReport | None:
        """Load and apply new settings; None (logged and counted) when they are refused."""
        try:
            report = self._reload(load)
        except (ConfigError, ReloadFailed) as exc:
            self._reloads.labels("error").inc()
            log.error(
                "config reload refused, the running configuration is kept: %s: %s",
                exc.key,
                exc.message,
            )
            return None
        except OSError as exc:
            # The file exists but cannot be read (permissions, a disk error).
            self._reloads.labels("error").inc()
            log.error(
                "config reload refused, the running configuration is kept: "
                "the config file could not be read (%s)",
                type(exc).__name__,
            )
            return None
        self._reloads.labels("ok").inc()
        for key in report.needs_restart:
            log.warning(
                "config reload: %s changed but needs a restart; the running value is kept",
                key,
            )
        if report.applied:
            log.info("config reload: applied %s", ", ".join(report.applied))
        else:
            log.info("config reload: nothing reloadable changed")
        return report

    def _reload(self, load: Loader) -> ReloadReport:
        new = load()
        old = self.current
        before, after = leaves(old), leaves(new)
        changed = [key for key in after if after[key] != before.get(key)]
        applied = tuple(key for key in changed if self.is_reloadable(key))
        needs_restart = tuple(key for key in changed if not self.is_reloadable(key))
        if not applied:
            return ReloadReport((), needs_restart)
        # Keys that need a restart keep their running value, so the mix is checked
        # again (e.g. a new auth token beside a bridge still enabled).
        merged = validate_settings(
            _with_values(old.model_dump(), {key: after[key] for key in applied})
        )
        self.current = merged
        done: list[_Subscriber] = []
        for subscriber in self._subscribers:
            keys = [k for k in applied if any(_covers(p, k) for p in subscriber.keys)]
            if not keys:
                continue
            try:
                subscriber.callback(merged)
            except Exception as exc:
                log.exception("config reload: applying %s failed", keys[0])
                # The failing callback may have applied part of its keys: it is
                # handed the old settings too.
                self._restore(old, [*done, subscriber])
                reason = f"could not be applied ({type(exc).__name__})"
                raise ReloadFailed(keys[0], reason) from None
            done.append(subscriber)
        return ReloadReport(applied, needs_restart)

    def _restore(self, old: Settings, applied: Iterable[_Subscriber]) -> None:
        self.current = old
        for subscriber in applied:
            try:
                subscriber.callback(old)
            except Exception:
                log.exception("config reload: putting the previous settings back failed")


def upper_bound(model: type[BaseModel], name: str) -> int:
    """The largest value a setting accepts (its ``le``): what a reload may raise it to."""
    for item in model.model_fields[name].metadata:
        bound = getattr(item, "le", None)
        if bound is not None:
            return int(bound)
    raise ValueError(f"{model.__name__}.{name} has no upper bound")
