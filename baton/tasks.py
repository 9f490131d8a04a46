"""baton's own Procrastinate tasks (autodiscovered by procrastinate.contrib.django).

The sweep is periodic: every worker defers it, Procrastinate runs one job per period, and
an advisory lock inside keeps two sweeps from overlapping.

Nothing here reads settings at import time (an invalid ``BATON`` must reach the system
checks, baton.E001 / baton.E003, instead of stopping ``django.setup()``): the sweep is
registered with the default interval, and ``schedule_sweep()`` (called by
``BatonConfig.ready()``) applies ``BATON["SWEEP_INTERVAL"]`` when it is valid.
"""

from __future__ import annotations

import attr
from django.db import close_old_connections
from procrastinate.contrib.django import app

from baton import conf
from baton.sweep import sweep as run_sweep

SWEEP_PERIODIC_ID = "baton-sweep"


def sweep_cron(interval_seconds: float) -> str:
    """A cron line (with croniter's seconds field where needed) for the interval."""
    seconds = max(1, round(interval_seconds))
    if seconds < 60:
        return f"* * * * * */{seconds}"
    minutes = max(1, round(seconds / 60))
    return f"*/{minutes} * * * *" if minutes < 60 else f"0 */{max(1, minutes // 60)} * * *"


DEFAULT_SWEEP_CRON = sweep_cron(float(conf.DEFAULTS["SWEEP_INTERVAL"]))  # type: ignore[arg-type]


@app.periodic(cron=DEFAULT_SWEEP_CRON, periodic_id=SWEEP_PERIODIC_ID)
@app.task(name="baton.sweep", queue="default", pass_context=False)
def sweep(timestamp: int) -> str:
    close_old_connections()
    try:
        return run_sweep().summary()
    finally:
        close_old_connections()


def schedule_sweep() -> str:
    """Give the periodic sweep the cron of ``BATON["SWEEP_INTERVAL"]``, and return it.

    An invalid ``BATON`` (reported by the checks E001 / E003) keeps the default interval
    instead of raising. Workers read the schedule at every tick, so calling this again
    (after ``override_settings``, say) takes effect at once."""
    interval = conf.valid_or_default("SWEEP_INTERVAL")
    cron = sweep_cron(float(interval))
    registry = app.periodic_registry.periodic_tasks
    key = (sweep.name, SWEEP_PERIODIC_ID)
    current = registry.get(key)
    if current is not None and current.cron != cron:
        registry[key] = attr.evolve(current, cron=cron)
    return cron
