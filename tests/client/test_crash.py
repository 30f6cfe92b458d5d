"""The server SIGKILLed mid-submit, and restarted on the same port and file: the client's
retries, with the one messageId it made, end with exactly one message.

A loopback TCP proxy stands between client and server. On the first connection it passes
the request on and, at the first byte of the answer (the message is stored by then: the
server answers after its commit), kills the server and drops the connection, so that the
client gets no answer to a submission the server did take. The test then restarts the
server on the same port and file while the client keeps trying through the proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from notify_relay_client import Client, MessageStatus, Retries, SubmitResult

from tests.e2e.api_client import ServerProcess
from tests.partner import Partner

pytestmark = pytest.mark.e2e
FLAGS = ("--allow-networks", "127.0.0.0/8")


class CuttingProxy:
    def __init__(self, upstream_port: int, on_cut: Callable[[], None]) -> None:
        self.upstream_port = upstream_port
        self.on_cut = on_cut
        self.cut_done = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            cut = self.connections == 1
            threading.Thread(target=self._serve, args=(downstream, cut), daemon=True).start()

    def _serve(self, downstream: socket.socket, cut: bool) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            downstream.close()  # the server is down: the client sees the connection drop
            return
        threading.Thread(target=self._pump, args=(downstream, upstream, None),
                         daemon=True).start()
        self._pump(upstream, downstream, self._cut if cut else None)

    def _cut(self, a: socket.socket, b: socket.socket) -> None:
        self.on_cut()
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.cut_done.set()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket,
              cut: Callable[[socket.socket, socket.socket], None] | None) -> None:
        try:
            while data := source.recv(65536):
                if cut is not None:
                    cut(source, sink)
                    return
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()


@pytest.fixture
def first(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "relay.db", *FLAGS, log=tmp_path / "first.log")
    with server:
        yield server


def test_sigkill_mid_submit_ends_with_one_message(tmp_path: Path, first: ServerProcess,
                                                  partner: Partner) -> None:
    proxy = CuttingProxy(first.port, on_cut=first.kill)
    # retries spread over the few seconds a restart takes
    retries = Retries(max_retries=30, initial_delay=0.05, max_delay=0.4)
    second = ServerProcess(first.db, *FLAGS, log=tmp_path / "second.log")
    second.port, second.base_url = first.port, first.base_url
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", sender_id="crash", retries=retries,
                    timeout=5) as client, ThreadPoolExecutor(1) as pool:
            # Given a submission under way
            future = pool.submit(client.submit, partner.url("/ok?crash"), body={"n": 1})
            # When the server dies after storing it, before answering, and comes back
            assert proxy.cut_done.wait(10), "the submission never reached the server"
            assert first.proc is not None
            assert first.proc.poll() is not None
            second.start()
            result: SubmitResult = future.result(timeout=30)

            # Then the client's retry found the message it had stored: one message
            assert result.duplicate is True
            assert proxy.connections >= 2
            messages = list(client.list())
            assert [m.message_id for m in messages] == [result.message_id]
            done = client.wait_for(result.message_id, timeout=10)
            assert done.status is MessageStatus.DELIVERED
        # at least once: a delivery cut by the kill may be made again, with the same key
        keys = {r.header("Idempotency-Key") for r in partner.received("/ok?crash")}
        assert keys == {f"crash:{result.message_id}"}
    finally:
        proxy.close()
        if second.proc is not None:
            second.terminate()

