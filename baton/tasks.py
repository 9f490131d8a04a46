"""baton's own Procrastinate tasks (autodiscovered by procrastinate.contrib.django).

The sweep is periodic: every worker defers it, Procrastinate runs one job per period, and
an advisory lock inside keeps two sweeps from overlapping.
"""

from __future__ import annotations

from procrastinate.contrib.django import app

from baton.conf import settings


def sweep_cron(interval_seconds: float) -> str:
    """A cron line (with croniter's seconds field where needed) for the interval."""
    seconds = max(1, round(interval_seconds))
    if seconds < 60:
        return f"* * * * * */{seconds}"
    minutes = max(1, round(seconds / 60))
    return f"*/{minutes} * * * *" if minutes < 60 else f"0 */{max(1, minutes // 60)} * * *"


@app.periodic(cron=sweep_cron(settings.SWEEP_INTERVAL), periodic_id="baton-sweep")
@app.task(name="baton.sweep", queue="default", pass_context=False)
def sweep(timestamp: int) -> str:
    from django.db import close_old_connections

    from baton.sweep import sweep as run_sweep

    close_old_connections()
    try:
        return run_sweep().summary()
    finally:
        close_old_connections()
