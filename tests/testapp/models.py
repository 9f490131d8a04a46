from django.db import models


class PerformRun(models.Model):
    """One call of a test step's perform(): the side-effect table the tests read."""

    workflow_id = models.UUIDField()
    step = models.CharField(max_length=255)
    attempt = models.IntegerField()
    started = models.FloatField()  # time.time(), comparable across processes
    finished = models.FloatField(null=True)
    pid = models.IntegerField()
