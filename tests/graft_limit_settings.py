"""tests.settings with BATON["GRAFT_MAX_STEPS"] = 3, for a worker of tests/worker/test_graft.py."""

from tests.settings import *  # noqa: F403
from tests.settings import BATON

BATON = {**BATON, "GRAFT_MAX_STEPS": 3}
