"""baton's settings object and system checks. No database needed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from baton import checks as baton_checks
from baton import conf
from tests.helpers import REPO_ROOT

IN_MEMORY = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
REDIS_OK = {
    "BACKEND": "channels_redis.core.RedisChannelLayer",
    "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}]},
}
LAYERS = {"default": REDIS_OK}


def baton_messages() -> list[checks.CheckMessage]:
    """Every message of baton's checks, run through Django's registry."""
    return [m for m in checks.run_checks() if (m.id or "").startswith("baton.")]


def only(messages: list[checks.CheckMessage], check_id: str) -> checks.CheckMessage:
    matching = [m for m in messages if m.id == check_id]
    assert len(matching) == 1, messages
    assert matching[0].hint, f"{check_id} has no hint"
    return matching[0]


# --- the settings object ----------------------------------------------------------------


def test_defaults_are_read_when_keys_are_absent() -> None:
    with override_settings(BATON={}):
        assert conf.settings.CHANNEL_LAYER is None
        assert conf.settings.PRICING == "baton.pricing.DefaultPricing"
        assert conf.settings.SWEEP_INTERVAL == 60
        assert conf.settings.PRUNE_AFTER is None
        assert conf.settings.RESULT_MAX_BYTES == 1_000_000
        assert conf.settings.STALE_EXECUTING_AFTER == 600
        assert conf.settings.DEBUG is False
        assert conf.settings.DEBUG_MAX_AGE == timedelta(days=7)
        assert conf.settings.GRAFT_MAX_STEPS == 10_000
        assert conf.settings.GRAFT_MAX_DEPTH == 8


def test_missing_baton_setting_reads_defaults() -> None:
    with override_settings():
        from django.conf import settings as django_settings

        del django_settings.BATON
        assert conf.settings.RESULT_MAX_BYTES == 1_000_000
        assert conf.problems() == []


def test_override_settings_is_seen_on_every_access() -> None:
    assert conf.settings.RESULT_MAX_BYTES == 1_000_000
    with override_settings(BATON={"RESULT_MAX_BYTES": 5}):
        assert conf.settings.RESULT_MAX_BYTES == 5
    assert conf.settings.RESULT_MAX_BYTES == 1_000_000


def test_configured_values_are_returned() -> None:
    baton = {
        "CHANNEL_LAYER": "default",
        "PRICING": "decimal.Decimal",
        "SWEEP_INTERVAL": 2.5,
        "PRUNE_AFTER": timedelta(days=3),
        "STALE_EXECUTING_AFTER": 30,
        "DEBUG": True,
        "DEBUG_MAX_AGE": timedelta(hours=1),
    }
    with override_settings(BATON=baton, CHANNEL_LAYERS=LAYERS):
        assert conf.settings.CHANNEL_LAYER == "default"
        assert conf.settings.PRICING == "decimal.Decimal"
        assert conf.settings.SWEEP_INTERVAL == 2.5
        assert conf.settings.PRUNE_AFTER == timedelta(days=3)
        assert conf.settings.STALE_EXECUTING_AFTER == 30
        assert conf.settings.DEBUG is True
        assert conf.settings.DEBUG_MAX_AGE == timedelta(hours=1)


def test_invalid_value_raises_improperly_configured_naming_the_key() -> None:
    with override_settings(BATON={"RESULT_MAX_BYTES": "big"}):
        with pytest.raises(ImproperlyConfigured, match=r"RESULT_MAX_BYTES.*positive int"):
            conf.settings.RESULT_MAX_BYTES  # noqa: B018
        # Other keys still read fine.
        assert conf.settings.SWEEP_INTERVAL == 60


def test_baton_not_a_dict_raises_on_access() -> None:
    with override_settings(BATON=["DEBUG"]):
        with pytest.raises(ImproperlyConfigured, match="BATON must be a dict"):
            conf.settings.DEBUG  # noqa: B018


# --- the checks ---------------------------------------------------------------------------


def test_defaults_produce_no_messages() -> None:
    with override_settings(BATON={}):
        assert baton_messages() == []
        assert conf.problems() == []


def test_test_settings_produce_no_messages() -> None:
    assert baton_messages() == []


def test_e001_baton_not_a_dict() -> None:
    with override_settings(BATON=[("DEBUG", True)]):
        messages = baton_messages()
    message = only(messages, "baton.E001")
    assert "BATON" in message.msg and "dict" in message.msg
    assert [m.id for m in messages] == ["baton.E001"]


def test_e002_unknown_key_names_it_and_lists_allowed_keys() -> None:
    with override_settings(BATON={"SWEEP_INTERVALL": 30}):
        message = only(baton_messages(), "baton.E002")
    assert "'SWEEP_INTERVALL'" in message.msg
    for key in conf.DEFAULTS:
        assert key in message.msg
    assert "Did you mean 'SWEEP_INTERVAL'?" in (message.hint or "")


def test_e002_one_error_per_unknown_key() -> None:
    with override_settings(BATON={"NOPE": 1, "ALSO_NOPE": 2}):
        messages = [m for m in baton_messages() if m.id == "baton.E002"]
    assert len(messages) == 2


@pytest.mark.parametrize(
    ("key", "value", "check_id", "allowed"),
    [
        ("SWEEP_INTERVAL", 0, "baton.E003", "positive number of seconds"),
        ("SWEEP_INTERVAL", "60", "baton.E003", "positive number of seconds"),
        ("SWEEP_INTERVAL", True, "baton.E003", "positive number of seconds"),
        ("SWEEP_INTERVAL", float("inf"), "baton.E003", "positive number of seconds"),
        ("PRUNE_AFTER", 7, "baton.E004", "None or a positive datetime.timedelta"),
        ("PRUNE_AFTER", timedelta(0), "baton.E004", "None or a positive datetime.timedelta"),
        ("RESULT_MAX_BYTES", 0, "baton.E005", "positive int"),
        ("RESULT_MAX_BYTES", 1.5, "baton.E005", "positive int"),
        ("RESULT_MAX_BYTES", False, "baton.E005", "positive int"),
        ("STALE_EXECUTING_AFTER", -1, "baton.E006", "positive number of seconds"),
        ("STALE_EXECUTING_AFTER", None, "baton.E006", "positive number of seconds"),
        ("DEBUG", 1, "baton.E007", "True or False"),
        ("DEBUG", "yes", "baton.E007", "True or False"),
        ("DEBUG_MAX_AGE", None, "baton.E008", "positive datetime.timedelta"),
        ("DEBUG_MAX_AGE", timedelta(seconds=-1), "baton.E008", "positive datetime.timedelta"),
        ("PRICING", "", "baton.E009", "dotted path"),
        ("PRICING", 42, "baton.E009", "dotted path"),
        ("CHANNEL_LAYER", "default", "baton.E010", "CHANNEL_LAYERS"),
        ("GRAFT_MAX_STEPS", 0, "baton.E012", "a positive int"),
        ("GRAFT_MAX_STEPS", 10.5, "baton.E012", "a positive int"),
        ("GRAFT_MAX_STEPS", "100", "baton.E012", "a positive int"),
        ("GRAFT_MAX_STEPS", True, "baton.E012", "a positive int"),
        ("GRAFT_MAX_DEPTH", -1, "baton.E013", "a positive int"),
        ("GRAFT_MAX_DEPTH", None, "baton.E013", "a positive int"),
        ("WORKER_THREADS", 0, "baton.E014", "None or a positive int"),
        ("WORKER_THREADS", "64", "baton.E014", "None or a positive int"),
        ("ASYNC_DB_THREADS", 0, "baton.E015", "a positive int"),
        ("ASYNC_DB_THREADS", None, "baton.E015", "a positive int"),
    ],
)
def test_invalid_value_is_reported_with_its_id_and_key(
    key: str, value: Any, check_id: str, allowed: str
) -> None:
    with override_settings(BATON={key: value}, CHANNEL_LAYERS={}):
        messages = baton_messages()
        with pytest.raises(ImproperlyConfigured, match=key):
            getattr(conf.settings, key)
    message = only(messages, check_id)
    assert f"BATON['{key}']" in message.msg
    assert allowed in message.msg
    assert repr(value) in message.msg
    assert [m.id for m in messages] == [check_id]


def test_e003_sweep_interval() -> None:
    with override_settings(BATON={"SWEEP_INTERVAL": -5}):
        message = only(baton_messages(), "baton.E003")
    assert "SWEEP_INTERVAL" in message.msg


def test_e004_prune_after() -> None:
    with override_settings(BATON={"PRUNE_AFTER": 86400}):
        message = only(baton_messages(), "baton.E004")
    assert "PRUNE_AFTER" in message.msg


def test_e005_result_max_bytes() -> None:
    with override_settings(BATON={"RESULT_MAX_BYTES": -1}):
        message = only(baton_messages(), "baton.E005")
    assert "RESULT_MAX_BYTES" in message.msg


def test_e006_stale_executing_after() -> None:
    with override_settings(BATON={"STALE_EXECUTING_AFTER": 0}):
        message = only(baton_messages(), "baton.E006")
    assert "STALE_EXECUTING_AFTER" in message.msg


def test_e007_debug() -> None:
    with override_settings(BATON={"DEBUG": "true"}):
        message = only(baton_messages(), "baton.E007")
    assert "DEBUG" in message.msg


def test_e008_debug_max_age() -> None:
    with override_settings(BATON={"DEBUG_MAX_AGE": 3600}):
        message = only(baton_messages(), "baton.E008")
    assert "DEBUG_MAX_AGE" in message.msg


def test_e009_pricing_that_does_not_import() -> None:
    with override_settings(BATON={"PRICING": "no_such_module.Pricing"}):
        message = only(baton_messages(), "baton.E009")
    assert "PRICING" in message.msg
    assert "'no_such_module.Pricing'" in message.msg
    assert "No module named 'no_such_module'" in message.msg


def test_e009_pricing_missing_attribute() -> None:
    with override_settings(BATON={"PRICING": "decimal.NoSuchPricing"}):
        message = only(baton_messages(), "baton.E009")
    assert "PRICING" in message.msg and "'decimal.NoSuchPricing'" in message.msg


def test_e009_pricing_not_a_class() -> None:
    with override_settings(BATON={"PRICING": "decimal.getcontext"}):
        message = only(baton_messages(), "baton.E009")
    assert "PRICING" in message.msg and "class" in message.msg


class PricingWithoutCost:
    pass


class PricingWithCost:
    def cost(self, usage: object) -> None:
        return None


def test_e009_pricing_class_without_cost() -> None:
    with override_settings(BATON={"PRICING": f"{__name__}.PricingWithoutCost"}):
        message = only(baton_messages(), "baton.E009")
    assert "PRICING" in message.msg and "cost(usage)" in message.msg


def test_e009_pricing_class_with_cost_is_accepted() -> None:
    with override_settings(BATON={"PRICING": f"{__name__}.PricingWithCost"}):
        assert baton_messages() == []


def test_e009_default_pricing_module_missing_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(path: str) -> object:
        raise ModuleNotFoundError("No module named 'baton.pricing'", name="baton.pricing")

    monkeypatch.setattr(baton_checks, "import_string", missing)
    with override_settings(BATON={}):
        assert baton_messages() == []


def test_e009_default_pricing_with_broken_import_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(path: str) -> object:
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    monkeypatch.setattr(baton_checks, "import_string", broken)
    with override_settings(BATON={}):
        message = only(baton_messages(), "baton.E009")
    assert "PRICING" in message.msg and "somedep" in message.msg


def test_e010_channel_layer_names_available_layers() -> None:
    layers = {**LAYERS, "other": LAYERS["default"]}
    with override_settings(BATON={"CHANNEL_LAYER": "typo"}, CHANNEL_LAYERS=layers):
        message = only(baton_messages(), "baton.E010")
    assert "CHANNEL_LAYER" in message.msg
    assert "'default', 'other'" in message.msg


def test_e010_channel_layer_that_exists_is_accepted() -> None:
    with override_settings(BATON={"CHANNEL_LAYER": "default"}, CHANNEL_LAYERS=LAYERS):
        assert baton_messages() == []
        assert conf.settings.CHANNEL_LAYER == "default"


@pytest.mark.parametrize(
    "names",
    [
        ["django.contrib.contenttypes", "baton", "procrastinate.contrib.django"],
        ["django.contrib.contenttypes", "baton"],
    ],
)
def test_e011_procrastinate_app_before_baton(
    monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    # Reordering INSTALLED_APPS with override_settings would re-run every app's ready();
    # replace the list the check reads instead.
    monkeypatch.setattr(baton_checks, "_installed_app_names", lambda: names)
    message = only(baton_messages(), "baton.E011")
    assert "INSTALLED_APPS" in message.msg
    assert "'procrastinate.contrib.django'" in message.msg


def test_e011_reads_the_real_app_registry() -> None:
    names = baton_checks._installed_app_names()
    assert names.index("procrastinate.contrib.django") < names.index("baton")
    assert baton_checks.check_installed_apps() == []


OVERRIDING_DATABASES = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


@OVERRIDING_DATABASES
def test_w001_conn_max_age_zero(settings: Any) -> None:
    database = {**settings.DATABASES["default"], "CONN_MAX_AGE": 0}
    with override_settings(DATABASES={**settings.DATABASES, "default": database}):
        messages = baton_checks.check_database()
    message = only(messages, "baton.W001")
    assert isinstance(message, checks.Warning)
    assert "CONN_MAX_AGE" in message.msg and "'default'" in message.msg
    assert "60" in (message.hint or "") and "None" in (message.hint or "")


@OVERRIDING_DATABASES
def test_w001_conn_max_age_absent_counts_as_zero(settings: Any) -> None:
    database = {k: v for k, v in settings.DATABASES["default"].items() if k != "CONN_MAX_AGE"}
    with override_settings(DATABASES={**settings.DATABASES, "default": database}):
        assert [m.id for m in baton_checks.check_database()] == ["baton.W001"]


@OVERRIDING_DATABASES
def test_w001_follows_procrastinate_database_alias(settings: Any) -> None:
    other = {**settings.DATABASES["default"], "CONN_MAX_AGE": 0}
    with override_settings(
        DATABASES={**settings.DATABASES, "jobs": other}, PROCRASTINATE_DATABASE_ALIAS="jobs"
    ):
        message = only(baton_checks.check_database(), "baton.W001")
    assert "'jobs'" in message.msg


@OVERRIDING_DATABASES
@pytest.mark.parametrize("conn_max_age", [60, None])
def test_w001_not_raised_for_persistent_connections(settings: Any, conn_max_age: Any) -> None:
    database = {**settings.DATABASES["default"], "CONN_MAX_AGE": conn_max_age}
    with override_settings(DATABASES={**settings.DATABASES, "default": database}):
        assert baton_checks.check_database() == []


# --- W002 / W003: the Channels layers ----------------------------------------------------


def test_w002_in_memory_layer_for_broadcasts() -> None:
    with override_settings(
        BATON={"CHANNEL_LAYER": "live"}, CHANNEL_LAYERS={"default": REDIS_OK, "live": IN_MEMORY}
    ):
        messages = baton_messages()
    message = only(messages, "baton.W002")
    assert isinstance(message, checks.Warning)
    assert "InMemoryChannelLayer" in message.msg and "'live'" in message.msg
    assert "channels_redis.core.RedisChannelLayer" in (message.hint or "")
    assert "socket_timeout" in (message.hint or "")
    assert [m.id for m in messages] == ["baton.W002"]


def test_w002_not_raised_without_broadcasting() -> None:
    # An in-memory layer is fine when baton broadcasts nothing (tests, a single process).
    with override_settings(BATON={}, CHANNEL_LAYERS={"default": IN_MEMORY}):
        assert baton_messages() == []


@pytest.fixture
def redis_py(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def set_major(major: int | None) -> None:
        monkeypatch.setattr(baton_checks, "_redis_py_major", lambda: major)

    return set_major


@pytest.mark.parametrize(
    "hosts",
    [
        ["redis://127.0.0.1:6379/0"],
        [("127.0.0.1", 6379)],
        [{"address": "redis://127.0.0.1:6379/0"}],
        [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 5}],
        None,
    ],
)
def test_w003_redis_py_8_host_without_socket_timeout_none(redis_py: Any, hosts: Any) -> None:
    redis_py(8)
    layer = {"BACKEND": "channels_redis.core.RedisChannelLayer"}
    if hosts is not None:
        layer["CONFIG"] = {"hosts": hosts}  # type: ignore[assignment]
    with override_settings(BATON={"CHANNEL_LAYER": "default"}, CHANNEL_LAYERS={"default": layer}):
        messages = baton_messages()
    message = only(messages, "baton.W003")
    assert isinstance(message, checks.Warning)
    assert "CHANNEL_LAYERS['default']" in message.msg and "redis-py 8" in message.msg
    assert '"socket_timeout": None' in (message.hint or "")
    assert [m.id for m in messages] == ["baton.W003"]


def test_w003_checks_the_broadcast_layer_and_the_consumers_layer(redis_py: Any) -> None:
    redis_py(8)
    plain = {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/1"]},
    }
    with override_settings(
        BATON={"CHANNEL_LAYER": "live"}, CHANNEL_LAYERS={"default": plain, "live": plain}
    ):
        messages = [m for m in baton_messages() if m.id == "baton.W003"]
    assert sorted(m.msg.split("]")[0] for m in messages) == [
        "CHANNEL_LAYERS['default'",
        "CHANNEL_LAYERS['live'",
    ]
    # A layer baton does not use is not its business.
    with override_settings(BATON={}, CHANNEL_LAYERS={"default": REDIS_OK, "other": plain}):
        assert baton_messages() == []


@pytest.mark.parametrize("major", [7, None])
def test_w003_not_raised_before_redis_py_8(redis_py: Any, major: int | None) -> None:
    redis_py(major)
    plain = {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
    }
    with override_settings(BATON={"CHANNEL_LAYER": "default"}, CHANNEL_LAYERS={"default": plain}):
        assert baton_messages() == []


def test_w003_not_raised_with_socket_timeout_none(redis_py: Any) -> None:
    redis_py(8)
    with override_settings(BATON={"CHANNEL_LAYER": "default"}, CHANNEL_LAYERS=LAYERS):
        assert baton_messages() == []


def test_redis_py_major_reads_the_installed_version() -> None:
    major = baton_checks._redis_py_major()
    assert major is None or major >= 4


# --- nothing reads BATON while Django starts ----------------------------------------------


@pytest.mark.parametrize(
    ("baton_value", "check_id"),
    [("{'SWEEP_INTERVAL': 0}", "baton.E003"), ("['not', 'a', 'dict']", "baton.E001")],
)
def test_invalid_baton_reaches_the_checks_instead_of_stopping_setup(
    tmp_path: Any, baton_value: str, check_id: str
) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "bad_baton_settings.py").write_text(
        f"from tests.settings import *  # noqa: F403\nBATON = {baton_value}\n"
    )
    root = REPO_ROOT
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bad_baton_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert done.returncode != 0
    assert f"({check_id})" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_schedule_sweep_follows_sweep_interval() -> None:
    from procrastinate.contrib.django import app

    from baton import tasks

    def cron() -> str:
        key = (tasks.sweep.name, tasks.SWEEP_PERIODIC_ID)
        return app.periodic_registry.periodic_tasks[key].cron

    try:
        with override_settings(BATON={"SWEEP_INTERVAL": 15}):
            assert tasks.schedule_sweep() == "* * * * * */15"
            assert cron() == "* * * * * */15"
        with override_settings(BATON={"SWEEP_INTERVAL": 0}):  # invalid: E003, the default
            assert tasks.schedule_sweep() == tasks.DEFAULT_SWEEP_CRON
        with override_settings(BATON="nope"):  # invalid: E001, the default
            assert tasks.schedule_sweep() == tasks.DEFAULT_SWEEP_CRON
            assert cron() == tasks.DEFAULT_SWEEP_CRON
    finally:
        tasks.schedule_sweep()
