from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.api_client import Api, ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module's tests; they keep apart by message id."""
    db = tmp_path_factory.mktemp("server") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8") as running:
        yield running


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server.base_url)
    yield client
    client.close()
