from __future__ import annotations

import pytest

from imagegen.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    # One engine for the session: loaded tiny pipelines are cached across tests, as a server would.
    return Engine(device="cpu", max_loaded=4)
