"""API keys, and the receiving side: signatures made by the real server, verified by
`WebhookVerifier` (on a partner's delivery and on a callback)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from notify_relay_client import (
    AuthenticationError,
    Client,
    ForbiddenError,
    MessageStatus,
    NotFoundError,
    WebhookVerificationError,
    WebhookVerifier,
    verify_webhook,
)

from tests.client.conftest import FAST
from tests.e2e.api_client import ServerProcess
from tests.partner import Partner

pytestmark = pytest.mark.e2e
SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()
OTHER = "whsec_" + base64.b64encode(b"another secret, not the server's").decode()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("keyed") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8",
                       "--api-keys", "key1=senderA,key2=senderB",
                       "--signing-secrets", f"senderA={SECRET}") as running:
        yield running


@pytest.fixture
def client_a(keyed: ServerProcess) -> Iterator[Client]:
    with Client(keyed.base_url, "key1", retries=FAST) as client:
        yield client


def test_api_key(keyed: ServerProcess, client_a: Client, partner: Partner) -> None:
    submitted = client_a.submit(partner.url("/ok?key"))
    assert submitted.sender_id == "senderA"
    with Client(keyed.base_url, retries=FAST) as anonymous, \
            pytest.raises(AuthenticationError) as raised:
        anonymous.get(submitted.message_id)
    assert (raised.value.status, raised.value.code) == (401, "UNAUTHENTICATED")
    with Client(keyed.base_url, "wrong", retries=FAST) as wrong, \
            pytest.raises(AuthenticationError):
        list(wrong.list())
    with Client(keyed.base_url, "key2", retries=FAST) as client_b, pytest.raises(NotFoundError):
        client_b.get(submitted.message_id)  # another sender's message
    with Client(keyed.base_url, "key1", sender_id="senderB", retries=FAST) as claiming, \
            pytest.raises(ForbiddenError) as forbidden:
        claiming.submit(partner.url("/ok?key"))
    assert forbidden.value.code == "FORBIDDEN"


def test_verify_a_delivery_signed_by_the_server(client_a: Client, partner: Partner) -> None:
    submitted = client_a.submit(partner.url("/ok?signed"), body={"order": 7})
    assert client_a.wait_for(submitted.message_id, 10).status is MessageStatus.DELIVERED
    (got,) = partner.received("/ok?signed")

    verified = WebhookVerifier(SECRET).verify(got.body, got.headers)
    assert verified.json() == {"order": 7}
    assert verified.id == got.header("webhook-id")
    assert verified.idempotency_key == f"senderA:{submitted.message_id}"
    assert verified.correlation_id == submitted.correlation_id
    # a rotation: the old secret among the accepted ones still verifies
    assert WebhookVerifier(OTHER, SECRET).verify(got.body, got.headers).body == got.body

    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, got.body.replace(b"7", b"8"), got.headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(OTHER, got.body, got.headers)
    unsigned = {k: v for k, v in got.headers.items() if k.lower() != "webhook-signature"}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, got.body, unsigned)
    with pytest.raises(ValueError, match="secret"):
        WebhookVerifier("")


def test_verify_a_callback(client_a: Client, partner: Partner) -> None:
    submitted = client_a.submit(partner.url("/status/400?cb"),
                                callback_url=partner.url("/ok?callback"))
    assert client_a.wait_for(submitted.message_id, 10).status is MessageStatus.FAILED

    deadline = time.monotonic() + 10
    while not partner.received("/ok?callback") and time.monotonic() < deadline:
        time.sleep(0.05)
    (got,) = partner.received("/ok?callback")
    event = WebhookVerifier(SECRET).verify(got.body, got.headers).callback()
    assert (event.type, event.message_id, event.status) == (
        "message.failed", submitted.message_id, MessageStatus.FAILED)
    assert (event.sender_id, event.attempt_count, event.last_status_code) == ("senderA", 1, 400)
    seen = client_a.wait_for(submitted.message_id, 10)
    assert seen.callback_url == partner.url("/ok?callback")
