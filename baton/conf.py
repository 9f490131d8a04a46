"""baton's settings: the only module in baton that reads ``django.conf.settings``.

``settings`` reads ``django.conf.settings.BATON`` on every attribute access, so
``override_settings`` is seen at once. Every key is optional; an absent key reads as its
default. A present but invalid value raises ``ImproperlyConfigured`` naming the key and
what is allowed; the system checks in ``baton.checks`` report the same problems at startup
(``problems()``), with the same ids, so a wrong value is caught before any worker runs.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, NamedTuple, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "DEFAULTS",
    "DEFAULT_PRICING",
    "DatabaseInfo",
    "Problem",
    "Settings",
    "channel_layer_aliases",
    "channel_layers",
    "problems",
    "procrastinate_database",
    "settings",
    "valid_or_default",
]

DEFAULT_PRICING: Final = "baton.pricing.DefaultPricing"

#: Every key of ``BATON`` and its default, in documentation order.
DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "CHANNEL_LAYER": None,
        "PRICING": DEFAULT_PRICING,
        "SWEEP_INTERVAL": 60,
        "PRUNE_AFTER": None,
        "RESULT_MAX_BYTES": 1_000_000,
        "STALE_EXECUTING_AFTER": 600,
        "DEBUG": False,
        "DEBUG_MAX_AGE": timedelta(days=7),
        "GRAFT_MAX_STEPS": 10_000,
        "GRAFT_MAX_DEPTH": 8,
        "WORKER_THREADS": None,
        "ASYNC_DB_THREADS": 4,
    }
)


class Problem(NamedTuple):
    """One invalid setting: a stable check id, what is wrong, and how to fix it."""

    id: str
    message: str
    hint: str


# --- validators -------------------------------------------------------------------------
# Each returns None when the value is allowed, else a description of what is allowed.


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_seconds(value: object) -> str | None:
    if _is_number(value) and cast(float, value) > 0:
        return None
    return "a positive number of seconds (int or float)"


def _positive_timedelta(value: object) -> str | None:
    if isinstance(value, timedelta) and value > timedelta(0):
        return None
    return "a positive datetime.timedelta"


def _none_or_positive_timedelta(value: object) -> str | None:
    if value is None or _positive_timedelta(value) is None:
        return None
    return "None or a positive datetime.timedelta"


def _positive_int(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return "a positive int (a size in bytes)"


def _positive_count(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return "a positive int"


def _none_or_positive_count(value: object) -> str | None:
    return None if value is None or _positive_count(value) is None else "None or a positive int"


def _bool(value: object) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _dotted_path(value: object) -> str | None:
    if (
        isinstance(value, str)
        and "." in value
        and all(part.isidentifier() for part in value.split("."))
    ):
        return None
    return "a dotted path to a class, such as 'myproject.pricing.MyPricing'"


def _channel_layer(value: object) -> str | None:
    aliases = channel_layer_aliases()
    if value is None or (isinstance(value, str) and value in aliases):
        return None
    available = ", ".join(repr(alias) for alias in aliases) if aliases else "none configured"
    return f"None or a key of settings.CHANNEL_LAYERS (available: {available})"


@dataclass(frozen=True)
class _Key:
    check_id: str
    validate: Callable[[object], str | None]
    hint: str


_KEYS: Final[Mapping[str, _Key]] = MappingProxyType(
    {
        "CHANNEL_LAYER": _Key(
            "baton.E010",
            _channel_layer,
            "Name a layer defined in settings.CHANNEL_LAYERS (for example 'default'), "
            "or set BATON['CHANNEL_LAYER'] = None to turn live broadcasting off.",
        ),
        "PRICING": _Key(
            "baton.E009",
            _dotted_path,
            f"Use the dotted path of a class with a cost(usage) method, or leave the key "
            f"out to use {DEFAULT_PRICING!r}.",
        ),
        "SWEEP_INTERVAL": _Key(
            "baton.E003",
            _positive_seconds,
            "Set BATON['SWEEP_INTERVAL'] to the seconds between sweeps, for example 60.",
        ),
        "PRUNE_AFTER": _Key(
            "baton.E004",
            _none_or_positive_timedelta,
            "Use for example timedelta(days=7), or None to keep finished workflows forever.",
        ),
        "RESULT_MAX_BYTES": _Key(
            "baton.E005",
            _positive_int,
            "Set BATON['RESULT_MAX_BYTES'] to the largest JSON result to store, "
            "for example 1_000_000.",
        ),
        "STALE_EXECUTING_AFTER": _Key(
            "baton.E006",
            _positive_seconds,
            "Set BATON['STALE_EXECUTING_AFTER'] to the seconds after which a silent "
            "executing step counts as stalled, for example 600.",
        ),
        "DEBUG": _Key(
            "baton.E007",
            _bool,
            "Set BATON['DEBUG'] to True to capture LLM debug data for every workflow, "
            "or False (the default).",
        ),
        "DEBUG_MAX_AGE": _Key(
            "baton.E008",
            _positive_timedelta,
            "Use for example timedelta(days=7): captured debug data older than this "
            "is pruned by the sweep.",
        ),
        "GRAFT_MAX_STEPS": _Key(
            "baton.E012",
            _positive_count,
            "Set BATON['GRAFT_MAX_STEPS'] to the most steps one job.graft() may add, "
            "for example 10_000.",
        ),
        "GRAFT_MAX_DEPTH": _Key(
            "baton.E013",
            _positive_count,
            "Set BATON['GRAFT_MAX_DEPTH'] to how deep grafts may nest (a graft made by a "
            "grafted step is depth 2), for example 8.",
        ),
        "WORKER_THREADS": _Key(
            "baton.E014",
            _none_or_positive_count,
            "Set BATON['WORKER_THREADS'] to how many synchronous steps one worker process "
            "may run at once (one thread and one database connection each), for example "
            "64, or None for Python's default thread pool, min(32, cores + 4).",
        ),
        "ASYNC_DB_THREADS": _Key(
            "baton.E015",
            _positive_count,
            "Set BATON['ASYNC_DB_THREADS'] to the threads (and database connections) one "
            "worker process uses for async steps' claims and completions, for example 4.",
        ),
    }
)

assert set(_KEYS) == set(DEFAULTS)

_ALLOWED_KEYS: Final = ", ".join(DEFAULTS)


# --- reading ----------------------------------------------------------------------------


class _NotAMapping(NamedTuple):
    value: object


def _raw() -> Mapping[Any, object] | _NotAMapping:
    value: object = getattr(django_settings, "BATON", {})
    if isinstance(value, Mapping):
        return cast(Mapping[Any, object], value)
    return _NotAMapping(value)


def _not_a_mapping_problem(value: object) -> Problem:
    return Problem(
        "baton.E001",
        f"settings.BATON must be a dict; got {type(value).__name__} ({value!r}).",
        "Set BATON = {} (every key is optional) or a dict with some of the keys: "
        f"{_ALLOWED_KEYS}.",
    )


def _key_problem(name: str, value: object) -> Problem | None:
    key = _KEYS[name]
    allowed = key.validate(value)
    if allowed is None:
        return None
    return Problem(key.check_id, f"BATON[{name!r}] must be {allowed}; got {value!r}.", key.hint)


def _unknown_key_problem(name: object) -> Problem:
    hint = "Correct the key's spelling or remove it: baton never reads an unknown key."
    if isinstance(name, str):
        close = difflib.get_close_matches(name.upper(), list(DEFAULTS), n=1)
        if close:
            hint = f"Did you mean {close[0]!r}? {hint}"
    return Problem(
        "baton.E002",
        f"BATON has an unknown key {name!r}; allowed keys: {_ALLOWED_KEYS}.",
        hint,
    )


def _get(name: str) -> Any:
    raw = _raw()
    if isinstance(raw, _NotAMapping):
        problem = _not_a_mapping_problem(raw.value)
        raise ImproperlyConfigured(f"{problem.message} {problem.hint} ({problem.id})")
    if name not in raw:
        return DEFAULTS[name]
    value = raw[name]
    problem_or_none = _key_problem(name, value)
    if problem_or_none is not None:
        raise ImproperlyConfigured(
            f"{problem_or_none.message} {problem_or_none.hint} ({problem_or_none.id})"
        )
    return value


class Settings:
    """baton's settings, read from ``django.conf.settings.BATON`` on every access."""

    @property
    def CHANNEL_LAYER(self) -> str | None:
        """Alias of the Channels layer to broadcast step transitions on; None: no broadcast."""
        return cast(str | None, _get("CHANNEL_LAYER"))

    @property
    def PRICING(self) -> str:
        """Dotted path to the pricing class (instances have ``cost(usage)``)."""
        return cast(str, _get("PRICING"))

    @property
    def SWEEP_INTERVAL(self) -> float:
        """Seconds between two sweeps."""
        return cast(float, _get("SWEEP_INTERVAL"))

    @property
    def PRUNE_AFTER(self) -> timedelta | None:
        """Age after which finished workflows are pruned; None: never."""
        return cast(timedelta | None, _get("PRUNE_AFTER"))

    @property
    def RESULT_MAX_BYTES(self) -> int:
        """Largest step result, in bytes of JSON, that is stored."""
        return cast(int, _get("RESULT_MAX_BYTES"))

    @property
    def STALE_EXECUTING_AFTER(self) -> float:
        """Seconds after which the sweep treats a silent executing step as stalled."""
        return cast(float, _get("STALE_EXECUTING_AFTER"))

    @property
    def DEBUG(self) -> bool:
        """Capture LLM debug data for every workflow."""
        return cast(bool, _get("DEBUG"))

    @property
    def DEBUG_MAX_AGE(self) -> timedelta:
        """Age after which captured debug data is pruned."""
        return cast(timedelta, _get("DEBUG_MAX_AGE"))

    @property
    def GRAFT_MAX_STEPS(self) -> int:
        """Most steps one job.graft() may add."""
        return cast(int, _get("GRAFT_MAX_STEPS"))

    @property
    def GRAFT_MAX_DEPTH(self) -> int:
        """Deepest graft: a step's graft is depth 1, a graft by a grafted step depth 2."""
        return cast(int, _get("GRAFT_MAX_DEPTH"))

    @property
    def WORKER_THREADS(self) -> int | None:
        """Threads of a worker's pool for synchronous steps (None: Python's default)."""
        return cast(int | None, _get("WORKER_THREADS"))

    @property
    def ASYNC_DB_THREADS(self) -> int:
        """Threads (and connections) of a worker for async steps' database work."""
        return cast(int, _get("ASYNC_DB_THREADS"))


settings: Final = Settings()


def valid_or_default(name: str) -> Any:
    """The value of ``BATON[name]`` when it is valid, else its default: never raises.

    For code that must not fail before the system checks have had their say (the sweep's
    schedule is set while Django starts); the checks report the invalid value."""
    raw = _raw()
    if isinstance(raw, _NotAMapping) or name not in raw or _key_problem(name, raw[name]):
        return DEFAULTS[name]
    return raw[name]


def problems() -> list[Problem]:
    """Every invalid value in ``settings.BATON``: E001, E002, E003 to E010, E012 to E015.

    E009 here only covers the shape of ``PRICING`` (a dotted path); whether it imports is
    checked by ``baton.checks``, which may import code.
    """
    raw = _raw()
    if isinstance(raw, _NotAMapping):
        return [_not_a_mapping_problem(raw.value)]
    found = [_unknown_key_problem(name) for name in raw if name not in DEFAULTS]
    for name in DEFAULTS:
        if name in raw:
            problem = _key_problem(name, raw[name])
            if problem is not None:
                found.append(problem)
    return found


# --- other Django settings baton depends on ---------------------------------------------


def channel_layer_aliases() -> list[str]:
    """The keys of ``settings.CHANNEL_LAYERS`` (empty when it is not set)."""
    return list(channel_layers())


def channel_layers() -> dict[str, object]:
    """``settings.CHANNEL_LAYERS`` (empty when it is not set or not a dict)."""
    layers: object = getattr(django_settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, Mapping):
        return {}
    return {str(alias): layer for alias, layer in layers.items()}


@dataclass(frozen=True)
class DatabaseInfo:
    """The database Procrastinate uses, as far as baton cares."""

    alias: str
    configured: bool
    conn_max_age: float | None


def procrastinate_database() -> DatabaseInfo:
    """The database of ``PROCRASTINATE_DATABASE_ALIAS`` (default ``"default"``).

    ``conn_max_age`` is Django's: 0 (the default when absent) closes the connection after
    each request or task, None keeps it forever.
    """
    alias = str(getattr(django_settings, "PROCRASTINATE_DATABASE_ALIAS", "default"))
    databases: object = getattr(django_settings, "DATABASES", {})
    if not isinstance(databases, Mapping) or alias not in databases:
        return DatabaseInfo(alias=alias, configured=False, conn_max_age=None)
    database: object = databases[alias]
    conn_max_age: object = database.get("CONN_MAX_AGE", 0) if isinstance(database, Mapping) else 0
    return DatabaseInfo(
        alias=alias,
        configured=True,
        conn_max_age=None if conn_max_age is None else cast(float, conn_max_age),
    )
