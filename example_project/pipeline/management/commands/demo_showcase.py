from django.core.management.base import BaseCommand, CommandParser

from example_project.pipeline.showcase import build_failure, build_fanout, build_retries


class Command(BaseCommand):
    help = (
        "Insert the showcase workflows: retries and a snooze, a failure that cancels its "
        "dependents (retry it after --down-for seconds), and a wide fan-out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--width", type=int, default=500, help="fan-out width (500)")
        parser.add_argument(
            "--down-for",
            type=float,
            default=45,
            help="seconds the failure workflow's partner stays down (45)",
        )

    def handle(self, *args, width: int, down_for: float, **options) -> None:
        for workflow, what in (
            (build_retries(), "a failed attempt, a retry and a snooze"),
            (
                build_failure(down_for),
                f"a discard that cancels 2 steps; retry it after {down_for:.0f} s",
            ),
            (build_fanout(width), f"{width} steps in parallel, then a join"),
        ):
            self.stdout.write(f"Inserted {workflow.name} {workflow.id}: {what}")
