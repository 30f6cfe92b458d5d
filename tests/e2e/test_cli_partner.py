"""`notify-relay partner` as a process: the answers it chooses, the line it prints for each
request, and a clean stop on SIGTERM or SIGINT (the module's partner stops with SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from tests.sockets import free_port


class PartnerProcess:
    """`notify-relay partner` in a child process on a free loopback port; its output in a
    file, read back as lines."""

    def __init__(self, log: Path, *flags: str) -> None:
        self.log_path = log
        self.flags = flags
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 20.0) -> PartnerProcess:
        return self.launch().ready(timeout)

    def launch(self) -> PartnerProcess:
        """Start the process without waiting for it: `ready` waits."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_RELAY_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notify_relay.cli", "partner", "--port", str(self.port),
                 *self.flags], stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def ready(self, timeout: float = 20.0) -> PartnerProcess:
        self.wait_for_line("partner listening on", timeout)
        return self

    def lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8").splitlines()

    def wait_for_line(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if text in line]
            if found:
                return found[-1]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"partner exited: {self.lines()[-20:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no line with {text!r} within {timeout} s: "
                                     f"{self.lines()[-20:]}")
            time.sleep(0.05)

    def stop(self, number: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(number)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> PartnerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartnerProcess]:
    with PartnerProcess(tmp_path_factory.mktemp("partner") / "plain.log") as running:
        yield running
        # Ctrl-C is a clean stop too
        assert running.stop(signal.SIGINT) == 0
        assert running.lines()[-1] == "partner stopped"


def test_the_path_chooses_the_answer_and_each_request_is_one_line(
    plain: PartnerProcess,
) -> None:
    assert httpx.post(plain.url("/status/503"), content=b"x").status_code == 503
    assert httpx.get(plain.url("/status/204")).status_code == 204
    answer = httpx.post(plain.url("/hook?a=1"), json={"order": 1},
                        headers={"Idempotency-Key": "default:m-1"})
    assert answer.status_code == 200
    assert answer.json() == {"status": 200, "ok": True, "receivedBytes": 11}
    line = plain.wait_for_line("/hook?a=1")
    assert "  POST  /hook?a=1  -> 200  content-type=application/json  " in line
    assert "idempotency-key=default:m-1" in line
    assert line.endswith('body={"order":1}')
    assert "-> 503" in plain.wait_for_line("/status/503")


def test_a_body_is_shown_on_one_line_and_cut(plain: PartnerProcess) -> None:
    httpx.put(plain.url("/long"), content=("a\nb" + "z" * 500).encode())
    line = plain.wait_for_line("PUT  /long")
    assert line.endswith("body=a\\nb" + "z" * 197 + "… (503 bytes)")


def test_flags_set_the_answer_and_delay_and_sigterm_stops_it(tmp_path: Path) -> None:
    with PartnerProcess(tmp_path / "p.log", "--status", "418", "--delay", "300ms") as partner:
        started = time.monotonic()
        assert httpx.post(partner.url("/anything"), content=b"").status_code == 418
        assert time.monotonic() - started >= 0.3
        assert httpx.post(partner.url("/status/200"), content=b"").status_code == 200
        assert "-> 418 after 0.3s" in partner.wait_for_line("/anything")
        assert partner.stop(signal.SIGTERM) == 0
        assert partner.lines()[-1] == "partner stopped"
