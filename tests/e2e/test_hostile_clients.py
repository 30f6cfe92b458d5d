"""Hostile clients over raw sockets: oversized and endless heads, half-sent bodies, slow
clients, many connections; meanwhile a well-behaved client's submissions keep answering
quickly and the server's memory stays bounded. Every loop is bounded in count and time."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, ServerProcess
from tests.partner import Partner
from tests.raw_http import problem_of, status_of

TIMEOUTS = ("--head-timeout", "1", "--request-timeout", "2")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("hostile") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8", *TIMEOUTS) as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def response_of(sock: socket.socket) -> bytes:
    """What the server answers before it closes the connection (at most 64 KiB)."""
    data = b""
    try:
        while len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def send_until_closed(sock: socket.socket, chunks: Iterator[bytes], budget: int) -> int:
    """Send until the server closes the connection or `budget` bytes went out."""
    sent = 0
    try:
        for chunk in chunks:
            sock.sendall(chunk)
            sent += len(chunk)
            if sent >= budget:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def submit_quickly(api: Api, partner: Partner) -> float:
    start = time.monotonic()
    response = api.submit({"messageId": f"calm-{uuid.uuid4().hex[:8]}",
                           "targetUrl": partner.url("/ok")})
    assert response.status_code == 202
    return time.monotonic() - start


def test_an_endless_header_is_cut_at_the_limit_with_431(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
    sent = send_until_closed(sock, iter(lambda: b"a" * 65536, b""), budget=32 * 1024 * 1024)
    raw = response_of(sock)
    sock.close()
    assert status_of(raw) == 431
    assert problem_of(raw)[1]["code"] == "HEADERS_TOO_LARGE"
    assert sent < 8 * 1024 * 1024  # cut off early, not after megabytes


@pytest.mark.parametrize(("count", "size"), [(101, 10), (40, 2000)])
def test_too_many_or_too_large_header_fields_are_431(server: ServerProcess, count: int,
                                                     size: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(count)) + b"\r\n"
    sock = connect(server)
    send_until_closed(sock, iter([head]), budget=len(head))
    raw = response_of(sock)
    sock.close()
    assert status_of(raw) == 431
    assert problem_of(raw)[1]["code"] == "HEADERS_TOO_LARGE"


def refused_head(server: ServerProcess, head: bytes) -> bytes:
    sock = connect(server)
    send_until_closed(sock, iter([head]), budget=len(head))
    raw = response_of(sock)
    sock.close()
    return raw


def test_a_431_sends_back_the_callers_correlation_id_or_a_new_one_each_time(
        server: ServerProcess) -> None:
    """Its answer was made once, at import: every 431 had the same correlationId and none
    had the header."""
    flood = b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n"
    mine = refused_head(server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                b"X-Correlation-Id: mine-431\r\n"
                                b"X-Correlation-Id: not-this-one\r\n" + flood)
    assert problem_of(mine)[0]["x-correlation-id"] == "mine-431"  # the first, as for a 200
    ids = {problem_of(refused_head(server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                           + flood))[1]["correlationId"] for _ in range(2)}
    assert len(ids) == 2
    assert all(uuid.UUID(str(new)).version == 4 for new in ids)


def answers_of(raw: bytes) -> list[bytes]:
    """The answers on a connection, one after another, each as long as its Content-Length."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        answers.append(head + b"\r\n\r\n" + rest[:length])
        raw = rest[length:]
    return answers


UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" \
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
FIELDS_101 = b"".join(b"X-H%d: v\r\n" % i for i in range(101))


@pytest.mark.parametrize("refused", [
    b"\x01\x02 nonsense\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + FIELDS_101 + b"\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + UPGRADE + FIELDS_101 + b"\r\n",
], ids=["unparsable", "431", "431-upgrade"])
def test_a_request_refused_behind_an_unanswered_one_closes_the_connection(
        server: ServerProcess, api: Api, refused: bytes) -> None:
    """Written at once, the refusal was read as the submission's answer, though the message
    was stored and queued. Now neither gets an answer: the sender sends it again, safely."""
    message_id = f"pipe-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"messageId": message_id, "targetUrl": "http://127.0.0.1:9/x"}).encode()
    submission = (b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body)) + body
    assert answers_of(refused_head(server, submission + refused)) == []
    api.wait_until(lambda: api.get(message_id).status_code == 200, "the submission stored")
    again = api.submit({"messageId": message_id, "targetUrl": "http://127.0.0.1:9/x"})
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert "Fatal error" not in server.logs()
    assert "KeyError" not in server.logs()


def test_a_refused_request_after_an_answered_one_gets_its_refusal(
        server: ServerProcess) -> None:
    body = json.dumps({"messageId": f"pipe-{uuid.uuid4().hex[:8]}",
                       "targetUrl": "http://127.0.0.1:9/x"}).encode()
    submission = (b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nX-Correlation-Id: first-req\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body)) + body
    # a head that stops half-way: its 408 comes after the submission's 202
    answers = answers_of(refused_head(server, submission + b"GET /healthz HTTP/1.1\r\nHo"))
    assert [status_of(answer) for answer in answers] == [202, 408]
    assert b"x-correlation-id: first-req" in answers[0].lower()
    assert problem_of(answers[1])[1]["code"] == "REQUEST_TIMEOUT"


def test_a_refused_upgrade_request_gets_its_431(server: ServerProcess) -> None:
    raw = refused_head(server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + UPGRADE
                       + FIELDS_101 + b"\r\n")
    assert problem_of(raw)[1]["code"] == "HEADERS_TOO_LARGE"
    assert "KeyError" not in server.logs()


@pytest.mark.parametrize("length", [b"", b"Content-Length: 0\r\n", b"Content-Length: 00\r\n"],
                         ids=["none", "0", "00"])
def test_a_websocket_upgrade_without_a_body_is_answered_then_the_connection_closes(
        server: ServerProcess, length: bytes) -> None:
    """The server speaks no WebSocket: the request is answered over HTTP/1.1 (it got a bare
    403), with `Connection: close`, and the connection closes. A length of 00 is no body
    either (it was refused as one, helper-69)."""
    sock = connect(server)
    sock.sendall(b"GET /v1/messages HTTP/1.1\r\nHost: localhost\r\n" + UPGRADE + length
                 + b"\r\n")
    raw = response_of(sock)  # until the server closes it
    sock.close()
    assert status_of(raw) == 200, raw[:200]
    assert b"\r\nconnection: close\r\n" in raw.lower()
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["items"] is not None


def test_nothing_sent_after_an_upgrade_request_is_read_as_http(
        server: ServerProcess, api: Api) -> None:
    """What follows such a head belongs to the protocol it asked for. Read as HTTP, it was
    out of step (helper-69): a submission pipelined in the same packet was dropped, the next
    one's 202 came where the client expected the first's, and a body sent in a later packet
    ran as a request of its own. Now the connection closes after the first answer, and
    neither submission is stored."""
    ids = [f"after-upgrade-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    def post(message_id: str) -> bytes:
        body = json.dumps({"messageId": message_id,
                           "targetUrl": f"http://127.0.0.1:{server.port}/nowhere"}).encode()
        return (b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body)

    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + UPGRADE + b"\r\n"
                 + post(ids[0]))
    time.sleep(0.3)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed already
        sock.sendall(post(ids[1]))
    raw = response_of(sock)
    sock.close()
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:300]
    assert status_of(raw) == 200, raw[:200]
    for message_id in ids:
        assert api.http.get(f"/v1/messages/{message_id}").status_code == 404


@pytest.mark.parametrize("upgrade", [UPGRADE, b"Connection: Upgrade\r\nUpgrade: h2c\r\n"])
def test_an_upgrade_with_a_body_is_refused_by_name(server: ServerProcess, api: Api,
                                                    upgrade: bytes) -> None:
    """The parser leaves what follows such a head to the new protocol, so the body is never
    read: a submission was answered "a JSON request body is required", and with uvicorn's
    WebSocket protocol on, not at all (helper-67). Nothing is stored."""
    message_id = f"upgrade-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"messageId": message_id,
                       "targetUrl": f"http://127.0.0.1:{server.port}/nowhere"}).encode()
    sock = connect(server)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n" + upgrade
                 + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                 + body)
    raw = response_of(sock)
    sock.close()
    assert status_of(raw) == 400, raw[:200]
    document = problem_of(raw)[1]
    assert document["code"] == "VALIDATION_ERROR"
    assert "does not switch protocols" in str(document["detail"])
    assert api.http.get(f"/v1/messages/{message_id}").status_code == 404


def test_a_request_line_too_long_to_parse_is_a_problem_too(server: ServerProcess) -> None:
    raw = refused_head(server, b"GET /v1/messages?cursor=" + b"a" * 70_000
                       + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(raw) == 400
    assert problem_of(raw)[1]["code"] == "VALIDATION_ERROR"


def test_headers_within_the_limits_pass(api: Api) -> None:
    headers = {f"X-H{i}": "v" * 500 for i in range(90)}  # 90 fields, about 45 KiB
    assert api.http.get("/healthz", headers=headers).status_code == 200


@pytest.mark.parametrize("start", [
    b"",  # connects and says nothing
    b"GET /healthz HTTP/1.1\r\nHost: loc",  # a head that stops half-way
    b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n",  # a Content-Length, and then nothing
    b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{\"messageId\": ",  # a body cut short
])
def test_slow_or_silent_clients_are_timed_out(server: ServerProcess, start: bytes) -> None:
    sock = connect(server)
    if start:
        sock.sendall(start)
    began = time.monotonic()
    raw = response_of(sock)
    sock.close()
    waited = time.monotonic() - began
    assert waited < 5  # the 1 s head and 2 s request timeouts, not forever
    assert raw == b"" or status_of(raw) == 408
    if raw:
        assert problem_of(raw)[1]["code"] == "REQUEST_TIMEOUT"


def test_an_oversized_body_that_never_comes_is_a_408_and_no_413_is_logged(
    server: ServerProcess,
) -> None:
    """The 413 waits for the body to be drained; a client that never sends it gets the
    408, and the 413 that could no longer be sent was logged all the same."""
    sock = connect(server)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/json\r\nX-Correlation-Id: never-drained-1\r\n"
                 b"Content-Length: 7340032\r\n\r\n{")
    raw = response_of(sock)
    sock.close()
    assert status_of(raw) == 408
    time.sleep(0.2)  # the app's task ends after the connection
    lines = [json.loads(line) for line in server.logs().splitlines()
             if "never-drained-1" in line]
    assert [line.get("status") for line in lines] == [408], lines


def test_a_trickling_head_is_cut_at_the_head_timeout(server: ServerProcess) -> None:
    sock = connect(server)
    began = time.monotonic()
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"s" * 100:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - began > 5:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = response_of(sock)
    sock.close()
    assert status_of(raw) in (0, 408)
    assert time.monotonic() - began < 5


def test_under_attack_a_calm_client_is_served_and_memory_stays_bounded(
    server: ServerProcess, api: Api, partner: Partner
) -> None:
    """Many idle connections, and twenty that each send a 6 MiB body minus one byte."""
    before = rss_mib(server)
    idle = [connect(server) for _ in range(200)]
    stop = threading.Event()
    body = b"{" + b" " * (6 * 1024 * 1024 - 3)

    def half_sent_body() -> None:
        sock = connect(server)
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body) + 1))
        send_until_closed(sock, (body[i:i + 65536] for i in range(0, len(body), 65536)),
                          budget=len(body))
        stop.wait(5)
        sock.close()

    senders = [threading.Thread(target=half_sent_body) for _ in range(20)]
    for thread in senders:
        thread.start()
    try:
        latencies = [submit_quickly(api, partner) for _ in range(20)]
        peak = rss_mib(server)
    finally:
        stop.set()
        for thread in senders:
            thread.join(15)
        for sock in idle:
            sock.close()
    assert max(latencies) < 2.0, latencies
    # the bodies being read share a 64 MiB budget: twenty 6 MiB bodies cannot all be held
    assert peak - before < 100, (before, peak)


def test_with_keys_a_bad_key_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "keys.db", "--api-keys", "k=team", *TIMEOUTS) as keyed:
        sock = connect(keyed)
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n"
                     b"Authorization: Bearer wrong\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 6000000\r\n\r\n")
        began = time.monotonic()
        raw = sock.recv(65536)  # no byte of the body was sent
        answered_in = time.monotonic() - began
        sock.close()
    assert status_of(raw) == 401
    assert answered_in < 1.0  # at once, not after waiting for a body
