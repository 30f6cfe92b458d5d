"""The console's own routes (/console, /console/api/...) over the real server process.

The key-less server of tests/e2e/conftest.py serves most tests, each under a sender of its
own (the `senderId` query parameter), so that exact counts hold; a server with keys
checks that the console's JSON is authenticated exactly as the API is.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, SqliteStore
from notify_relay.adapters.sqlite.console import SqliteConsoleReads
from notify_relay.console.reads import MessageFilter
from notify_relay.console.router import CONTENT_SECURITY_POLICY
from notify_relay.domain.errors import StoreUnavailable
from notify_relay.domain.status import Status
from tests.e2e.api_client import Api, ServerProcess
from tests.factories import make_message
from tests.partner import Partner

STATUSES = {status.value for status in Status}


def submit(api: Api, sender: str, message_id: str, url: str, **fields: Any) -> None:
    response = api.submit({"messageId": message_id, "senderId": sender, "targetUrl": url,
                           "retryPolicy": {"maxAttempts": 1, "initialDelaySeconds": 0.2},
                           **fields})
    assert response.status_code == 202, response.text


def console(api: Api, path: str, sender: str, **params: Any) -> httpx.Response:
    return api.http.get(f"/console/api/{path}", params={"senderId": sender, **params})


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["messageId"] for m in response.json()["items"]]


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["correlationId"] == response.headers["x-correlation-id"]
    return body


@pytest.fixture(scope="module")
def settled(server: ServerProcess) -> Iterator[str]:
    """Sender `console-a`, made once for the module: two messages delivered to `alpha`,
    then one failed at `beta`."""
    sender = "console-a"
    with Partner() as partner, Api(server.base_url) as api:
        submit(api, sender, "a-1", partner.url("/ok"), destination="alpha")
        api.wait_for("a-1", {"DELIVERED"}, senderId=sender)
        submit(api, sender, "a-2", partner.url("/ok"), destination="alpha")
        api.wait_for("a-2", {"DELIVERED"}, senderId=sender)
        submit(api, sender, "b-1", partner.url("/status/404"), destination="beta")
        api.wait_for("b-1", {"FAILED"}, senderId=sender)
        yield sender


def test_counts_by_status(api: Api, settled: str) -> None:
    response = console(api, "counts", settled)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["counts"]) == STATUSES  # every status, those with none at 0
    assert body["counts"] == {**dict.fromkeys(body["counts"], 0), "DELIVERED": 2, "FAILED": 1}
    assert body["total"] == 3
    assert console(api, "counts", "console-nobody").json()["total"] == 0


def test_deliveries_and_failures_per_minute(api: Api, settled: str) -> None:
    body = console(api, "activity", settled).json()
    minutes = body["minutes"]
    assert len(minutes) == 60
    starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert all(s.second == 0 and s.microsecond == 0 for s in starts)
    assert starts[0] == datetime.fromisoformat(body["since"])
    assert starts[-1] <= datetime.fromisoformat(body["until"]) < starts[-1] + timedelta(minutes=1)
    assert sum(m["delivered"] for m in minutes) == 2
    assert sum(m["failed"] for m in minutes) == 1
    assert len(console(api, "activity", settled, minutes=5).json()["minutes"]) == 5
    problem(console(api, "activity", settled, minutes=0), 400, "VALIDATION_ERROR")
    problem(console(api, "activity", settled, minutes=1441), 400, "VALIDATION_ERROR")


def test_messages_by_destination_status_id_and_time(api: Api, settled: str) -> None:
    assert ids(console(api, "messages", settled)) == ["b-1", "a-2", "a-1"]
    assert ids(console(api, "messages", settled, destination="alpha")) == ["a-2", "a-1"]
    assert ids(console(api, "messages", settled, status="FAILED")) == ["b-1"]
    assert ids(console(api, "messages", settled, status="DELIVERED",
                       destination="beta")) == []
    assert ids(console(api, "messages", settled, messageId="a-")) == ["a-2", "a-1"]
    assert ids(console(api, "messages", settled, messageId="a-1")) == ["a-1"]
    assert ids(console(api, "messages", settled, messageId="a-10")) == []

    created = {m["messageId"]: m["createdAt"] for m in
               console(api, "messages", settled).json()["items"]}
    assert ids(console(api, "messages", settled, since=created["a-2"])) == ["b-1", "a-2"]
    assert ids(console(api, "messages", settled, until=created["a-2"])) == ["a-1"]
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(console(api, "messages", settled, since=in_an_hour)) == []
    assert ids(console(api, "messages", settled, since=hour_ago, until=in_an_hour,
                       timeField="updated", status="FAILED", destination="beta")) == ["b-1"]
    # another sender's messages are not seen
    assert ids(console(api, "messages", "console-nobody")) == []


def test_messages_are_paged_newest_first(api: Api, settled: str) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = console(api, "messages", settled, limit=1,
                       **({"cursor": cursor} if cursor else {})).json()
        seen += [m["messageId"] for m in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["b-1", "a-2", "a-1"]


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "2026-01-01T00:00:00"}, "since"),  # no time zone
    ({"until": "yesterday"}, "until"),
    ({"destination": "a b"}, "destination"),
    ({"messageId": "<script>"}, "messageId"),
    ({"status": "LOST"}, "status"),
    ({"timeField": "deliveredAt"}, "timeField"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"limit": 501}, "limit"),
])
def test_invalid_filters_are_400_problems(api: Api, params: dict[str, Any], field: str) -> None:
    body = problem(console(api, "messages", "console-a", **params), 400, "VALIDATION_ERROR")
    assert [e["field"] for e in body["errors"]] == [field]


def test_page_and_files_carry_a_strict_content_security_policy(api: Api) -> None:
    for path, media in (("/console", "text/html"), ("/console/", "text/html"),
                        ("/console/static/console.js", "text/javascript"),
                        ("/console/static/console.css", "text/css"),
                        ("/console/static/favicon.svg", "image/svg+xml")):
        response = api.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media), path
        csp = response.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    page = api.http.get("/console").text
    # nothing inline, nothing from elsewhere
    assert "<script>" not in page
    assert "style=" not in page
    assert "http" not in page.split("<body>")[1]
    for missing in ("/console/static/index.py", "/console/static/..%2F__init__.py",
                    "/console/static/../reads.py"):
        problem(api.http.get(missing), 404, "NOT_FOUND")


def test_the_servers_address_leads_to_the_console(api: Api) -> None:
    response = api.http.get("/")
    assert (response.status_code, response.headers["location"]) == (307, "/console")


def test_console_is_not_in_the_contract_openapi(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


def test_session_without_keys_is_the_claimed_sender(api: Api) -> None:
    assert console(api, "session", "ops").json() == {"senderId": "ops", "keys": False}
    assert api.http.get("/console/api/session").json() == {"senderId": "default", "keys": False}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("console-keys") / "relay.db"
    with ServerProcess(db, "--api-keys", "key-c=team-c") as running:
        yield running


@pytest.mark.parametrize("path", ["session", "counts", "activity", "messages"])
def test_console_json_is_authenticated_as_the_api(keyed: ServerProcess, path: str) -> None:
    with Api(keyed.base_url) as anonymous:
        problem(anonymous.http.get(f"/console/api/{path}"), 401, "UNAUTHENTICATED")
    with Api(keyed.base_url, key="wrong") as wrong:
        problem(wrong.http.get(f"/console/api/{path}"), 401, "UNAUTHENTICATED")
    with Api(keyed.base_url, key="key-c") as team:
        assert team.http.get(f"/console/api/{path}").status_code == 200
        problem(team.http.get(f"/console/api/{path}", params={"senderId": "team-d"}),
                403, "FORBIDDEN")
        if path == "session":
            assert team.http.get("/console/api/session").json() == {
                "senderId": "team-c", "keys": True}


def test_console_page_itself_needs_no_key(keyed: ServerProcess) -> None:
    """The page and its files are the same for everyone; the key is typed into it."""
    with Api(keyed.base_url) as anonymous:
        assert anonymous.http.get("/console").status_code == 200
        assert anonymous.http.get("/console/static/console.js").status_code == 200


def test_the_aws_app_has_no_console_and_loads_no_sqlite() -> None:
    """create_app over a store that is not SQLite (the API Lambda's) mounts no console and
    never imports the SQLite adapters."""
    code = """
import sys
from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.api.app import create_app
from notify_relay.bootstrap import NoDelivery
from notify_relay.gate import Gate
from notify_relay.runtime import Runtime
from notify_relay.service import Relay
store = MemoryStore()
app = create_app(Runtime(Relay(store, MemoryQueue(), NoDelivery(), Gate(store.destinations))))
paths = [getattr(route, "path", "") for route in app.routes]
assert not [p for p in paths if p.startswith("/console")], paths
loaded = [m for m in sys.modules if m.startswith("notify_relay.adapters.sqlite")]
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.anyio
async def test_sqlite_reads_never_write(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "relay.db")
    database.open()
    try:
        store = SqliteStore(database)
        await store.create(make_message("m-1", "s"))
        reads = SqliteConsoleReads(database)
        try:
            assert await reads.counts("s") == {"QUEUED": 1}
            page = await reads.messages("s", MessageFilter(id_prefix="m-"), 10, None)
            assert [m.key.message_id for m in page.items] == ["m-1"]
            with pytest.raises(StoreUnavailable, match="readonly"):
                await reads._read(lambda conn: conn.execute("DELETE FROM messages"))
            assert await reads.counts("s") == {"QUEUED": 1}
        finally:
            await reads.close()
    finally:
        database.close()
