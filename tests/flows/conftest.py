"""One Prefect test harness per session (about 10 s to start), results in a temp folder."""

from __future__ import annotations

import os
import tempfile

import pytest

# Before prefect is imported: cached results must not leak between test sessions.
_RESULTS = tempfile.mkdtemp(prefix="mtb-prefect-results-")
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = _RESULTS
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
