"""Which requests the API process of a two-process server sends on to the owner, and as
what: each path as it came, dot segments and all (a destination may be named `.` or `..`)."""

from __future__ import annotations

import pytest

from notify_relay.embedded.owner import as_sent, forwarded


@pytest.mark.parametrize(("path", "owner"), [
    ("/metrics", True),
    ("/v1/destinations", True),
    ("/v1/destinations/crm", True),
    ("/v1/destinations/..", True),
    ("/v1/destinations/.", True),
    ("/v1/destinations/../messages", True),  # sent as it is: no route of the owner's (404)
    ("/v1/messages", False),
    ("/v1/destinationsx", False),
    ("/readyz", False),
])
def test_the_owner_s_routes(path: str, owner: bool) -> None:
    assert forwarded(path) is owner


@pytest.mark.parametrize(("target", "sent"), [
    ("/v1/destinations/..", "/v1/destinations/.."),
    ("/v1/destinations/.", "/v1/destinations/."),
    ("/v1/destinations/%2E%2E", "/v1/destinations/%2E%2E"),  # not decoded
    ("/v1/destinations/../messages?x=../y", "/v1/destinations/../messages?x=../y"),
    ("/v1/destinations/a\xe9", "/v1/destinations/a%E9"),  # a raw byte, as latin-1 text
])
def test_a_target_is_sent_as_it_came(target: str, sent: str) -> None:
    """aiohttp's URLs drop dot segments and decode `%2E`: `..` reached `/v1/`."""
    assert as_sent(target).raw_path_qs == sent
