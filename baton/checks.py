"""Django system checks for baton's configuration.

Every check has a stable id (``baton.E001`` ... ``baton.E015``, ``baton.W001`` ...
``baton.W003``), a message that names the setting and what is allowed, and a hint; all
are documented in ``docs/reference/settings.md``. Importing this module registers the checks, which
``BatonConfig.ready()`` does. Django settings are read through ``baton.conf`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.utils.module_loading import import_string

from baton import conf

__all__ = ["check_channel_layers", "check_database", "check_installed_apps", "check_settings"]

PROCRASTINATE_APP = "procrastinate.contrib.django"
BATON_APP = "baton"


@checks.register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001 to E010, E012 to E015: the values of ``settings.BATON``."""
    messages: list[checks.CheckMessage] = [
        checks.Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in conf.problems()
    ]
    if not any(message.id in ("baton.E001", "baton.E009") for message in messages):
        pricing_error = _pricing_import_error(conf.settings.PRICING)
        if pricing_error is not None:
            messages.append(pricing_error)
    return messages


def _pricing_import_error(path: str) -> checks.Error | None:
    """E009 when ``path`` does not import to a class with a ``cost`` method."""
    hint = (
        "Point BATON['PRICING'] at a class whose instances have cost(usage) -> "
        f"Decimal | None, or leave the key out to use {conf.DEFAULT_PRICING!r}."
    )
    try:
        target: object = import_string(path)
    except ImportError as exc:
        if path == conf.DEFAULT_PRICING and _is_missing_module(exc, path):
            return None  # baton's own default pricing is not installed in this build.
        return checks.Error(
            f"BATON['PRICING'] must be a dotted path that imports to a class; "
            f"importing {path!r} failed: {type(exc).__name__}: {exc}",
            hint=hint,
            id="baton.E009",
        )
    if not isinstance(target, type):
        return checks.Error(
            f"BATON['PRICING'] must be a dotted path to a class; {path!r} is a "
            f"{type(target).__name__}.",
            hint=hint,
            id="baton.E009",
        )
    if not callable(getattr(target, "cost", None)):
        return checks.Error(
            f"BATON['PRICING'] must name a class with a cost(usage) method; {path!r} has none.",
            hint=hint,
            id="baton.E009",
        )
    return None


def _is_missing_module(exc: ImportError, path: str) -> bool:
    """Whether ``exc`` says the module of ``path`` itself (not one it imports) is missing."""
    module_path = path.rpartition(".")[0]
    return (
        isinstance(exc, ModuleNotFoundError)
        and exc.name is not None
        and (module_path == exc.name or module_path.startswith(exc.name + "."))
    )


def _installed_app_names() -> list[str]:
    """The names of the installed apps, in ``INSTALLED_APPS`` order (AppConfig paths resolved)."""
    return [app_config.name for app_config in apps.get_app_configs()]


@checks.register()
def check_installed_apps(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E011: Procrastinate's Django app is installed, before baton."""
    names = _installed_app_names()
    procrastinate_index = names.index(PROCRASTINATE_APP) if PROCRASTINATE_APP in names else None
    baton_index = names.index(BATON_APP) if BATON_APP in names else None
    if procrastinate_index is not None and (
        baton_index is None or procrastinate_index < baton_index
    ):
        return []
    where = "missing from" if procrastinate_index is None else "after 'baton' in"
    return [
        checks.Error(
            f"INSTALLED_APPS must contain {PROCRASTINATE_APP!r} before 'baton'; "
            f"it is {where} INSTALLED_APPS.",
            hint=(
                f"Use INSTALLED_APPS = [..., {PROCRASTINATE_APP!r}, 'channels', 'baton']: "
                "baton uses the Procrastinate app that it configures."
            ),
            id="baton.E011",
        )
    ]


@checks.register()
def check_database(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W001: the database Procrastinate uses keeps its connections (CONN_MAX_AGE != 0)."""
    database = conf.procrastinate_database()
    if not database.configured or database.conn_max_age != 0:
        return []
    return [
        checks.Warning(
            f"DATABASES[{database.alias!r}]['CONN_MAX_AGE'] is 0 (the default), and it is the "
            "database Procrastinate and baton use (PROCRASTINATE_DATABASE_ALIAS): every task "
            "then opens a new connection, about +5 ms on each step hand-off.",
            hint=(
                f"Set DATABASES[{database.alias!r}]['CONN_MAX_AGE'] to a number of seconds "
                "such as 60, or None to keep connections open "
                "(and consider CONN_HEALTH_CHECKS = True)."
            ),
            id="baton.W001",
        )
    ]


IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
REDIS_LAYER = "channels_redis.core.RedisChannelLayer"
# The alias baton's live-page consumers join their groups on (Channels' default).
CONSUMER_LAYER = "default"
_REDIS_HOST_FIX = '{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}'


def _redis_py_major() -> int | None:
    """The major version of the installed redis-py, or None when it is not installed."""
    try:
        version = metadata.version("redis")
    except metadata.PackageNotFoundError:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _unsafe_hosts(config: object) -> list[str]:
    """The channels-redis hosts (as written) that keep redis-py's socket timeout."""
    hosts: object = config.get("hosts") if isinstance(config, Mapping) else None
    if not hosts:
        return ["(no hosts: channels-redis's default redis://localhost:6379)"]
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
        return []  # channels-redis itself refuses these
    unsafe = []
    for host in hosts:
        if isinstance(host, Mapping) and "socket_timeout" in host:
            if host["socket_timeout"] is None:
                continue
        unsafe.append(repr(host))
    return unsafe


@checks.register()
def check_channel_layers(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W002: the broadcast layer is in-memory; W003: a channels-redis layer whose sockets
    redis-py 8 times out when idle."""
    messages: list[checks.CheckMessage] = []
    if any(p.id in ("baton.E001", "baton.E010") for p in conf.problems()):
        return messages  # what CHANNEL_LAYER names is unknown: E001 / E010 say so
    layers = conf.channel_layers()
    alias = conf.settings.CHANNEL_LAYER
    if alias is not None and _backend(layers.get(alias)) == IN_MEMORY_LAYER:
        messages.append(
            checks.Warning(
                f"BATON['CHANNEL_LAYER'] is {alias!r}, an InMemoryChannelLayer: it cannot "
                "carry a step's transition from a worker process to a browser, so live "
                "pages never update while workflows run.",
                hint=(
                    f'Use a Redis layer: CHANNEL_LAYERS[{alias!r}] = {{"BACKEND": '
                    f'"{REDIS_LAYER}", "CONFIG": {{"hosts": [{_REDIS_HOST_FIX}]}}}} '
                    "(pip install channels-redis), or set BATON['CHANNEL_LAYER'] = None "
                    "to broadcast nothing."
                ),
                id="baton.W002",
            )
        )
    major = _redis_py_major()
    if major is None or major < 8:
        return messages
    used = [CONSUMER_LAYER] + ([alias] if alias is not None and alias != CONSUMER_LAYER else [])
    for name in used:
        layer = layers.get(name)
        if not _backend(layer).startswith("channels_redis."):
            continue
        unsafe = _unsafe_hosts(layer.get("CONFIG") if isinstance(layer, Mapping) else None)
        if not unsafe:
            continue
        messages.append(
            checks.Warning(
                f"CHANNEL_LAYERS[{name!r}] uses channels-redis with redis-py {major}, and its "
                f"host(s) {', '.join(unsafe)} keep redis-py's socket timeout: from redis-py 8 "
                "an idle socket times out after 5 s (redis/redis-py#4091), so every live "
                "page's WebSocket drops after 5 quiet seconds.",
                hint=(
                    "Give each host as a dict with socket_timeout None: "
                    f'CONFIG = {{"hosts": [{_REDIS_HOST_FIX}]}}.'
                ),
                id="baton.W003",
            )
        )
    return messages


def _backend(layer: object) -> str:
    if not isinstance(layer, Mapping):
        return ""
    return str(layer.get("BACKEND", ""))
