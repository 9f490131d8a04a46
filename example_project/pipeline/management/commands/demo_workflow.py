from django.core.management.base import BaseCommand, CommandParser

from example_project.pipeline.tasks import build_ingest


class Command(BaseCommand):
    help = "Insert the sample ingest workflow (fetch -> parse[...] -> store -> report)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=20, help="rows to fetch (default 20)")
        parser.add_argument("--parts", type=int, default=4, help="parse fan-out (default 4)")
        parser.add_argument(
            "--no-flaky", action="store_true", help="no parse part fails on its first attempt"
        )

    def handle(self, *args, rows: int, parts: int, no_flaky: bool, **options) -> None:
        workflow = build_ingest(n=rows, parts=parts, flaky_part=None if no_flaky else 1)
        self.stdout.write(f"Inserted ingest workflow {workflow.id} ({parts + 3} steps)")
