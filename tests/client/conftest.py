"""The client against a real `notify-relay serve` process over loopback sockets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from notify_relay_client import Client, Retries

from tests.e2e.api_client import ServerProcess
from tests.partner import Partner

pytestmark = pytest.mark.e2e
# quick retries: a test that waits for a restart sets its own
FAST = Retries(max_retries=4, initial_delay=0.05, max_delay=0.5)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One key-less server for these tests; they keep apart by sender."""
    db = tmp_path_factory.mktemp("client") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8") as running:
        yield running


@pytest.fixture(scope="package")
def partner() -> Iterator[Partner]:
    """One partner for these tests (stopping one takes half a second): a test that counts
    what it received gives its paths a query of its own."""
    with Partner() as running:
        yield running


@pytest.fixture
def sender() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def relay(server: ServerProcess, sender: str) -> Iterator[Client]:
    with Client(server.base_url, sender_id=sender, retries=FAST) as client:
        yield client
