"""Tables the benchmark reads: one Timing row per measured run of a step or job, and the
counter rows raw Procrastinate uses for its fan-in."""

from django.db import models


class Timing(models.Model):
    run = models.CharField(max_length=64, db_index=True)  # one measurement
    name = models.CharField(max_length=255)  # step name or raw job kind
    seq = models.IntegerField(default=0)  # position in a chain
    started = models.FloatField()  # time.time() at the start of perform / the job
    finished = models.FloatField()  # time.time() at its end (before this row is written)
    late = models.FloatField(null=True)  # snooze: seconds after the job's scheduled_at


class Counter(models.Model):
    """Raw Procrastinate's fan-in: each member job increments it; the last defers the join."""

    run = models.CharField(max_length=64, primary_key=True)
    value = models.IntegerField(default=0)
