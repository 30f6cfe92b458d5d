"""`serve --processes 2`: the owner process (file, delivery, destinations, metrics) and the
API process it starts. Each killed alone, and both at once, loses nothing; the owner
restarts a crashed API process; a stop ends both; what needs the owner's state reaches it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.api_client import Api, ServerProcess, submit_until_killed
from tests.partner import Partner
from tests.sockets import free_port

MESSAGES = 300
FLAGS = ("--processes", "2", "--allow-networks", "127.0.0.0/8", "--concurrency", "16",
         "--destination-concurrency", "6")


def default_stop_signals() -> None:
    """For a server started here: the default actions, as from a terminal. The test runner
    may run under `nohup` (a CI run did: its server then rightly ignored SIGHUP) or as a
    background job of a script (SIGINT ignored)."""
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def api_pid(server: ServerProcess, timeout: float = 10.0) -> int:
    """The pid of the owner's child (the API process), once it listens."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError("the owner has no API process")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going as it was read
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.02)


def deliver_the_rest(server: ServerProcess, ids: list[str], accepted: set[str],
                     partner: Partner) -> None:
    with Api(server.base_url) as api:
        for mid in ids:
            if mid not in accepted:  # what the sender had no answer for, sent again
                response = api.submit({"messageId": mid, "body": {"id": mid},
                                       "targetUrl": partner.url(f"/slow/0.05?{mid}")})
                assert response.status_code in (200, 202), response.text
        api.wait_all_delivered(ids)
        listed = api.destinations().json()["items"]
        assert all(d["inFlight"] == 0 and d["pending"] == 0 for d in listed), listed
    received = {r.path.split("?", 1)[1] for r in partner.received("/slow")}
    assert received >= set(ids)


@pytest.mark.parametrize("victim", ["owner", "api", "both"])
def test_sigkill_loses_nothing(victim: str, tmp_path: Path, partner: Partner) -> None:
    db = tmp_path / "relay.db"
    ids = [f"{victim}-{i:04d}" for i in range(MESSAGES)]
    first = ServerProcess(db, *FLAGS, log=tmp_path / "first.log").start()
    assert first.proc is not None
    owner, child = first.proc.pid, api_pid(first)

    def kill() -> None:
        if victim in ("api", "both"):
            os.kill(child, signal.SIGKILL)
        if victim in ("owner", "both"):
            os.kill(owner, signal.SIGKILL)

    with Api(first.base_url) as api:
        accepted = submit_until_killed(
            api, ids, lambda mid: {"messageId": mid, "body": {"id": mid},
                                   "targetUrl": partner.url(f"/slow/0.05?{mid}")},
            partner, kill)
    assert 0 < len(partner.received("/slow")) < MESSAGES
    wait_gone(child)  # killed, or gone by itself once its owner died
    if victim == "api":  # the owner goes on and starts another API process
        first.wait_ready()
        assert api_pid(first) != child
        assert "the API process ended unexpectedly: restarting it" in first.logs()
        try:
            deliver_the_rest(first, ids, accepted, partner)
        finally:
            assert first.terminate() == 0
        return
    first.proc.wait(timeout=10)
    second = ServerProcess(db, *FLAGS, log=tmp_path / "second.log").start()
    try:
        deliver_the_rest(second, ids, accepted, partner)
    finally:
        assert second.terminate() == 0


def test_a_stop_ends_both_processes_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "relay.db", *FLAGS).start()
    child = api_pid(server)
    assert server.terminate(timeout=30) == 0
    wait_gone(child, timeout=1)
    assert "Traceback" not in server.logs()


def test_a_ctrl_c_reaching_both_stops_the_server(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole process group: no restart, exit 0."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS).start()
    assert server.proc is not None
    child = api_pid(server)
    os.kill(child, signal.SIGINT)
    os.kill(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(timeout=30) == 0
    wait_gone(child, timeout=1)
    assert "restarting" not in server.logs()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_api_process_alone_starts_another(
        stop: signal.Signals, tmp_path: Path, partner: Partner) -> None:
    """A stray kill of the API process is not the server's stop (the whole server used to
    stop, with exit status 0, which systemd's Restart=on-failure leaves stopped): the owner
    starts another API process, as after a crash, and the server goes on."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS).start()
    assert server.proc is not None
    try:
        child = api_pid(server)
        os.kill(child, stop)
        wait_gone(child)
        server.wait_ready()
        assert api_pid(server) != child
        assert server.proc.poll() is None
        assert ("the API process was stopped by itself, not the server: starting another"
                in server.logs())
        with Api(server.base_url) as api:
            response = api.submit({"messageId": "after-the-kill", "body": {},
                                   "targetUrl": partner.url("/after")})
            assert response.status_code == 202, response.text
            api.wait_all_delivered(["after-the-kill"])
    finally:
        assert server.terminate(timeout=30) == 0
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_while_starting_is_a_clean_stop(tmp_path: Path,
                                                      stop: signal.Signals) -> None:
    """Before uvicorn's handlers were in place (a second or more) a SIGTERM killed the
    server, exit 143, where the contract promises a clean stop and 0. SIGHUP (a terminal
    closed) killed it at any time."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS)
    proc = server.launch(preexec_fn=default_stop_signals)
    try:
        time.sleep(0.15)  # the interpreter has started; the server's stack is still loading
        early = server.logs()
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0, server.logs()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"starting"' not in early, "the signal came after the start: the test says nothing"
    logs = server.logs()
    assert "Traceback" not in logs, logs[-2000:]
    assert "the API process listens" not in logs  # a stop before it: not started at all
    if stop == signal.SIGTERM:  # once is enough: the file is whole and not held
        with ServerProcess(server.db, *FLAGS) as again:
            assert httpx.get(again.base_url + "/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_same_stop_signal_twice_ends_the_grace(tmp_path: Path, partner: Partner,
                                                   stop: signal.Signals) -> None:
    """The first waits for attempts in flight (up to --shutdown-grace); a second cuts them
    short at once, and the stop still records them so: the message is tried again after
    the restart. A second SIGTERM did nothing; a second SIGINT skipped the recording."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS, "--shutdown-grace", "60s").start()
    assert server.proc is not None
    with Api(server.base_url) as api:
        assert api.submit({"messageId": "slow", "targetUrl": partner.url("/slow/8")}
                          ).status_code == 202
        api.wait_for("slow", {"DELIVERING"})
        server.proc.send_signal(stop)
        with pytest.raises(subprocess.TimeoutExpired):  # the first waits
            server.proc.wait(timeout=1.5)
        server.proc.send_signal(stop)
        assert server.proc.wait(timeout=5) == 0
    assert "abandoned an attempt at shutdown" in server.logs()
    # no grace: its stop does not wait for the partner's 8 s again
    with ServerProcess(server.db, *FLAGS, "--shutdown-grace", "0") as again, \
            Api(again.base_url) as api:
        message = api.get("slow").json()
        assert message["attempts"][0]["error"].startswith("attempt cut short: the server "
                                                          "stopped"), message


@pytest.mark.parametrize(("first", "stop"), [("api", signal.SIGTERM), ("owner", signal.SIGINT)])
def test_a_stop_signal_to_both_processes_lets_a_request_in_progress_finish(
    tmp_path: Path, first: str, stop: signal.Signals
) -> None:
    """systemd's stop signals every process of a service (KillSignal=, the main one first).
    The owner also asks its API process to stop; were that a second SIGTERM, or were a
    SIGINT after it taken for a second Ctrl-C (uvicorn's rule), the API process would stop
    at once and cut the request (it did, with a 500, both ways)."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS).start()
    assert server.proc is not None
    child = api_pid(server)
    order = [child, server.proc.pid] if first == "api" else [server.proc.pid, child]
    body = b'{"messageId": "mid-stop", "targetUrl": "http://127.0.0.1:9/x"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.3)
        os.kill(order[0], stop)
        time.sleep(0.05)
        os.kill(order[1], stop)
        time.sleep(0.5)
        client.sendall(body[10:])
        assert client.recv(4096).startswith(b"HTTP/1.1 202 "), server.logs()[-2000:]
    assert server.proc.wait(timeout=30) == 0
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("delay", [0.0, 0.005])
def test_a_group_stop_as_the_api_process_starts_is_a_clean_stop(tmp_path: Path,
                                                                 delay: float) -> None:
    """systemd, `tini -g`, supervisord's stopasgroup signal the whole group. One that came
    just as the owner started its API process killed the child before it read its
    settings, and the owner died of the closed pipe: a traceback, exit 1 (helper-53)."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS)
    proc = server.launch(start_new_session=True, preexec_fn=default_stop_signals)
    try:
        deadline = time.monotonic() + 20
        while "starting the API process" not in server.logs():
            assert proc.poll() is None, server.logs()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, server.logs()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in server.logs()


def test_sighup_ignored_at_start_stays_ignored(tmp_path: Path) -> None:
    """`nohup notify-relay serve &`: the terminal closes, the server runs on."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS)
    server.launch(preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        server.wait_ready()
        child = api_pid(server)
        os.kill(child, signal.SIGHUP)
        os.kill(server.proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert server.proc.poll() is None
        assert alive(child)
        assert httpx.get(server.base_url + "/readyz", timeout=5).status_code == 200
    finally:
        assert server.terminate() == 0


def test_stop_signals_repeated_until_the_end_still_exit_0(tmp_path: Path) -> None:
    """A supervisor that repeats its SIGTERM: the interpreter's exit puts the default
    action back, and one that came then ended a clean stop with 143 (5 runs of 5)."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS).start()
    assert server.proc is not None
    deadline = time.monotonic() + 20
    while server.proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    assert server.proc.wait(timeout=5) == 0


def test_a_start_that_hangs_stops_at_a_second_signal(tmp_path: Path) -> None:
    """Signals are held while the server starts; a start that never ends (a file that
    does not answer: here a FIFO) must still yield to the same signal twice."""
    db = tmp_path / "relay.db"
    os.mkfifo(db)
    server = ServerProcess(db, *FLAGS)
    proc = server.launch(preexec_fn=default_stop_signals)
    try:
        time.sleep(2.0)  # in the open of the file, for good
        # the API process was started before the file was opened (api_child.py), and
        # waits for its settings
        child = api_pid(server, timeout=1)
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):  # held: the start may yet end
            proc.wait(timeout=0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == -signal.SIGINT
        wait_gone(child, timeout=5)  # its input ended with its owner: no orphan left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_server_on_the_same_file_leaves_the_first_one_whole(tmp_path: Path) -> None:
    """The second one starts its API process before it finds the file locked: that process
    ends with it, and the first one's socket (beside the file, the same name for both) is
    left alone, so that what the first one's API process forwards still reaches its owner."""
    db = tmp_path / "relay.db"
    with ServerProcess(db, *FLAGS) as first, Api(first.base_url) as api:
        assert api.patch_destination("crm", {"paused": True}).status_code == 200
        second = subprocess.Popen(
            [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(free_port()),
             "--db", str(db), *FLAGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        its_api = first_child(second)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "in use by another notify-relay process" in err, out + err
        wait_gone(its_api, timeout=1)  # not left behind
        assert Path(f"{db}.sock").is_socket()
        response = api.destination("crm")  # forwarded to the first one's owner
        assert response.status_code == 200, response.text
        assert response.json()["paused"] is True


def first_child(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """The owner's first child, as soon as it exists (polled every ms)."""
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if pids := children.read_text().split():
                return int(pids[0])
        time.sleep(0.001)
    raise AssertionError("the owner started no API process")


def test_an_api_process_killed_before_its_settings_is_logged_and_started_again(
        tmp_path: Path) -> None:
    """Killed from outside while the owner still starts (its settings are small: they fit
    the pipe's buffer, and only the close reports the broken pipe): the log says so, and
    another is started, as after a crash (its own error, a port taken, ends the start)."""
    server = ServerProcess(tmp_path / "relay.db", *FLAGS)
    proc = server.launch(preexec_fn=default_stop_signals)
    try:
        killed = first_child(proc)
        os.kill(killed, signal.SIGKILL)
        server.wait_ready()
        assert api_pid(server) != killed
        logs = server.logs()
        assert "the API process ended before it read its settings" in logs
        assert "the API process did not start: trying again" in logs
        assert server.terminate() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_ctrl_c_just_as_the_api_process_starts_is_a_clean_stop(tmp_path: Path) -> None:
    """The API process starts with the stop signals blocked until it holds them: a Ctrl-C
    to the group in its interpreter's start printed a KeyboardInterrupt traceback from it."""
    for run, delay in enumerate((0.03, 0.05, 0.08, 0.12)):  # into its interpreter's start
        server = ServerProcess(tmp_path / f"relay-{run}.db", *FLAGS)
        proc = server.launch(preexec_fn=default_stop_signals, start_new_session=True)
        try:
            first_child(proc)
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the group
            assert proc.wait(timeout=30) == 0
            logs = server.logs()
            assert "Traceback" not in logs, logs[-3000:]
            assert "KeyboardInterrupt" not in logs, logs[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_long_path_s_socket_folder_is_not_left_by_a_start_cut_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --db path too long for a socket beside it gets one in a temporary folder, made by
    the owner once it holds the file: made before (while it still imported), a start cut
    short by a second signal left it behind (helper-54)."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    temp = tmp_path / "t"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where the server makes the folder
    server = ServerProcess(deep / "relay.db", *FLAGS)
    proc = server.launch(preexec_fn=default_stop_signals)
    try:
        first_child(proc)
        time.sleep(0.3)  # the owner imports its stack
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # the same twice while starting: at once
        proc.wait(timeout=30)
        assert list(temp.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_api_process_that_cannot_listen_fails_the_start(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "a.db", *FLAGS) as first:
        second = subprocess.run(  # the same port, another file
            [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(first.port),
             "--db", str(tmp_path / "b.db"), *FLAGS],
            capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert "address already in use" in second.stdout + second.stderr
        assert "restarting" not in second.stdout + second.stderr


def test_new_work_wakes_the_owner_at_once(tmp_path: Path, partner: Partner) -> None:
    """The owner's worker sleeps up to 5 s when idle; a submission to the API process rings
    it through the wake pipe."""
    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server, Api(server.base_url) as api:
        time.sleep(1.0)  # the worker is idle now
        for n in range(3):
            sent = time.monotonic()
            assert api.submit({"messageId": f"wake-{n}", "targetUrl": partner.url("/ok"),
                               "body": {}}).status_code == 202
            api.wait_for(f"wake-{n}", {"DELIVERED"}, timeout=10)
            assert time.monotonic() - sent < 2.5, "delivered at the idle poll, not woken"


def test_destinations_and_metrics_are_the_owners(tmp_path: Path, partner: Partner) -> None:
    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server, Api(server.base_url) as api:
        response = api.patch_destination("crm", {"paused": True})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers.get("x-correlation-id")
        assert api.submit({"messageId": "held", "destination": "crm", "body": {},
                           "targetUrl": partner.url("/ok")}).status_code == 202
        time.sleep(0.5)
        assert api.get("held").json()["status"] == "QUEUED"  # the owner's gate holds it
        assert api.get("held").json()["nextAttemptAt"] is None  # the API process sees why
        assert api.patch_destination("crm", {"paused": False}).status_code == 200
        api.wait_for("held", {"DELIVERED"})
        assert api.destination("nope").json()["code"] == "NOT_FOUND"
        metrics = httpx.get(server.base_url + "/metrics").text
        assert 'notify_relay_submissions_total{code="",result="accepted"} 1.0' in metrics
        assert "notify_relay_deliveries_total 1.0" in metrics
        types = [line for line in metrics.splitlines() if line.startswith("# TYPE")]
        assert len(types) == len(set(types))  # each family once
        assert httpx.get(server.base_url + "/readyz").status_code == 200


@contextlib.contextmanager
def squat(port: int) -> Iterator[None]:
    """Listen on `port` (the kernel may take a moment to free it after a kill)."""
    deadline = time.monotonic() + 5
    while True:
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            squatter.bind(("127.0.0.1", port))
            break
        except OSError:
            squatter.close()
            assert time.monotonic() < deadline, f"port {port} stays taken"
            time.sleep(0.01)
    with squatter:
        squatter.listen()
        yield


def test_an_api_process_that_cannot_start_again_is_tried_again(tmp_path: Path) -> None:
    """Only the first start's failure is fatal: later, the port taken for a while (or any
    failed restart) is tried again with the growing delays, and the server goes on."""
    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server:
        child = api_pid(server)
        os.kill(child, signal.SIGKILL)
        wait_gone(child)
        with squat(server.port):  # the port, taken before the owner restarts
            deadline = time.monotonic() + 20
            while "did not start again" not in server.logs():
                assert time.monotonic() < deadline, server.logs()[-2000:]
                time.sleep(0.1)
        server.wait_ready(timeout=30)
        assert server.proc is not None
        assert server.proc.poll() is None  # the owner went on
        assert httpx.get(server.base_url + "/readyz").status_code == 200


def raw_request(port: int, request: bytes) -> bytes:
    """A request sent as written (an HTTP client would normalise its path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_forwarding_keeps_to_the_owners_routes_and_the_request_ids(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server:
        body = b'{"messageId": "dots", "targetUrl": "http://127.0.0.1:9/x"}'
        for path in (b"/v1/destinations/../messages", b"/v1/destinations/%2e%2e/messages"):
            answer = raw_request(server.port, b"POST " + path + b" HTTP/1.1\r\n"
                                 b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        with Api(server.base_url) as api:
            assert api.get("dots").status_code == 404  # nothing reached the owner's routes
        big = httpx.patch(server.base_url + "/v1/destinations/crm", json={"x": "y" * 70_000},
                          headers={"X-Correlation-Id": "mine-1"})
        assert big.status_code == 413
        assert big.headers["x-correlation-id"] == "mine-1"
        assert big.json()["correlationId"] == "mine-1"
        listed = httpx.get(server.base_url + "/v1/destinations",
                           headers={"X-Correlation-Id": "mine-2"})
        assert listed.headers["x-correlation-id"] == "mine-2"
        assert len(listed.headers.get_list("date")) == 1
        socket_file = Path(f"{tmp_path / 'relay.db'}.sock")
        assert socket_file.stat().st_mode & 0o777 == 0o600  # beside the database
    assert not socket_file.exists()  # removed at a clean stop


@pytest.mark.parametrize(("name", "path"), [("..", b".."), ("..", b"%2E%2E"), (".", b".")])
def test_a_destination_named_with_dots_is_the_owner_s_too(
        tmp_path: Path, name: str, path: bytes) -> None:
    """`.` and `..` are destination names (the contract's characters). Their paths stayed in
    the API process, whose own gate stored a pause that the owner, which admits attempts
    and had the destination in memory, never saw, and wrote its record over (helper-75)."""
    def raw(method: bytes, body: bytes = b"") -> bytes:
        return raw_request(server.port, method + b" /v1/destinations/" + path + b" HTTP/1.1\r\n"
                           b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Connection: close\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)

    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server, Api(server.base_url) as api:
        def attempts(message_id: str) -> int:
            return len(api.get(message_id).json()["attempts"])

        message = {"destination": name, "targetUrl": "http://127.0.0.1:9/x"}  # refused
        assert api.submit({"messageId": "before", **message}).status_code == 202
        deadline = time.monotonic() + 10
        while attempts("before") == 0:  # the owner has the destination in memory now
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = raw(b"PATCH", b'{"paused": true}')
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert api.submit({"messageId": "after", **message}).status_code == 202
        time.sleep(2.5)  # the owner's statistics are written every second
        assert attempts("after") == 0  # paused
        answer = raw(b"GET")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"paused":true' in answer


def test_readiness_says_so_when_the_owner_does_not_answer(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "relay.db", *FLAGS) as server:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            ready = httpx.get(server.base_url + "/readyz", timeout=15)
            assert ready.status_code == 503
            assert "owner process" in ready.json()["detail"]
            assert time.monotonic() - started < 5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while httpx.get(server.base_url + "/readyz", timeout=15).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
