"""``python -m tests.live_server DBNAME PORT``: serve tests.asgi with uvicorn on 127.0.0.1,
against the database DBNAME (the test database), for the browser tests."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    import django
    from django.conf import settings

    name, port = argv
    # The web process broadcasts what it does (cancel / retry from the page), as in a
    # project whose web and worker processes load the same settings.
    os.environ["BATON_TEST_BROADCAST"] = "1"
    settings.DATABASES["default"]["NAME"] = name
    django.setup()

    import uvicorn

    from tests.asgi import application

    uvicorn.run(application, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")


if __name__ == "__main__":
    main(sys.argv[1:])
