from django.db import models


class PerformRun(models.Model):
    """One call of a test step's perform(): the side-effect table the tests read."""

    workflow_id = models.UUIDField()
    step = models.CharField(max_length=255)
    attempt = models.IntegerField()
    started = models.FloatField()  # time.time(), comparable across processes
    finished = models.FloatField(null=True)
    pid = models.IntegerField()


class Completion(models.Model):
    """One row per committed move of a baton step into `completed`, written by a trigger
    on baton_step inside the completing transaction (migration 0002): the ledger that shows
    whether any step completed more than once, whatever crashed around it."""

    step_id = models.BigIntegerField()
    workflow_id = models.UUIDField()
    step = models.CharField(max_length=255)
    attempt = models.IntegerField()
    job_id = models.BigIntegerField(null=True)
