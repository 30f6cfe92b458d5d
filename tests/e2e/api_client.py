"""A thin client of the contract, and a running `notify-relay serve` process to point it at."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.partner import Partner
from tests.sockets import free_port


class ServerProcess:
    """`notify-relay serve` in a child process on a free loopback port."""

    def __init__(self, db: Path, *flags: str, log: Path | None = None) -> None:
        self.db = db
        self.flags = flags
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or db.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self, **popen: Any) -> subprocess.Popen[bytes]:
        """The process started, not waited for; `popen`: more of Popen's arguments."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_RELAY_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(self.port),
                 "--db", str(self.db), *self.flags],
                stdout=log, stderr=subprocess.STDOUT, env=env, **popen,
            )
        return self.proc

    def wait_ready(self, timeout: float = 20.0) -> ServerProcess:
        """Until /healthz answers (the port's process listens)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crash or an OOM kill."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()


class Api:
    def __init__(self, base_url: str, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30.0)

    def submit(self, message: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.http.post("/v1/messages", json=message, **kwargs)

    def get(self, message_id: str, **params: str) -> httpx.Response:
        return self.http.get(f"/v1/messages/{message_id}", params=params)

    def list(self, **params: Any) -> httpx.Response:
        return self.http.get("/v1/messages", params=params)

    def retry(self, message_id: str, **params: str) -> httpx.Response:
        return self.http.post(f"/v1/messages/{message_id}/retry", params=params)

    def cancel(self, message_id: str, **params: str) -> httpx.Response:
        return self.http.post(f"/v1/messages/{message_id}/cancel", params=params)

    def replay(self, selection: dict[str, Any] | None = None, **params: str) -> httpx.Response:
        return self.http.post("/v1/messages/replay", json=selection, params=params)

    def destinations(self, **params: Any) -> httpx.Response:
        return self.http.get("/v1/destinations", params=params)

    def destination(self, name: str, **params: str) -> httpx.Response:
        return self.http.get(f"/v1/destinations/{name}", params=params)

    def patch_destination(self, name: str, changes: dict[str, Any],
                          **params: str) -> httpx.Response:
        return self.http.patch(f"/v1/destinations/{name}", json=changes, params=params)

    def pages(self, get: Callable[..., httpx.Response], **params: Any) -> Iterator[Any]:
        """Each page of a list, following nextCursor to the end."""
        while True:
            response = get(**params)
            assert response.status_code == 200, response.text
            page = response.json()
            yield page
            if page["nextCursor"] is None:
                return
            params["cursor"] = page["nextCursor"]

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            time.sleep(0.05)

    def wait_all_delivered(self, message_ids: Sequence[str], timeout: float = 60.0) -> None:
        """Until every one is DELIVERED; fails naming the first ten that are not."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [mid for mid in message_ids
                       if self.get(mid).json()["status"] != "DELIVERED"]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pending == [], f"not delivered: {pending[:10]}"

    def wait_for(self, message_id: str, statuses: set[str], timeout: float = 15.0,
                 **params: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(message_id, **params)
            body: dict[str, Any] = response.json()
            if response.status_code == 200 and body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{message_id}: {body} after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def submit_until_killed(api: Api, ids: list[str], body: Callable[[str], dict[str, Any]],
                        partner: Partner, kill: Callable[[], None]) -> set[str]:
    """Submit `ids` from 8 threads; `kill()` once the partner has 40 requests, some others
    in flight or queued. Returns the ids acknowledged (a submission the kill cut off is
    the sender's to send again)."""
    def submit(mid: str) -> str | None:
        try:
            response = api.submit(body(mid))
        except httpx.TransportError:
            return None  # the server died under this request: the sender will retry it
        return mid if response.status_code in (200, 202) else None

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(submit, mid) for mid in ids]
        deadline = time.monotonic() + 30
        while len(partner.received("/slow")) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        kill()
        return {mid for f in futures if (mid := f.result()) is not None}
