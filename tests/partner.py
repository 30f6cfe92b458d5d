"""A real HTTP partner on 127.0.0.1, in a thread, scripted by path.

Paths: /ok, /status/<code>, /flaky/<n> (n times 503, then 200), /retry-after/<value>
(one 429 with that Retry-After, then 200), /slow/<seconds>, /redirect, /switch/<name>
(503 while `failing` holds <name>, else 200). Every request is recorded, body and headers
included, and the most requests in progress at once is kept per first path segment.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# the bodies of /explain/<status> and /long: the relay keeps the first 1,024 bytes
EXPLAINED = b'{"error": "account 42 is closed"}'
LONG = b"a" * 1023 + "\u00e9".encode() * 600
# shutdown() returns once serve_forever looks at its flag again, which it does once a poll:
# at the default 0.5 s, every test that stops a partner waited that long
POLL_INTERVAL = 0.02


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of the relay's 64 connections
    # at once (its default per destination) overflowed it, and the dropped SYNs came
    # back after 1 s, 3 s, 7 s. Servers partners run listen with hundreds or thousands.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (the relay's timeout, a test's early close) is
        part of the tests, not an error to print a traceback for amid pytest's output."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class Partner:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.failing: set[str] = set()
        self.max_in_progress: Counter[str] = Counter()
        self._in_progress: Counter[str] = Counter()
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        partner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                segment = self.path.strip("/").split("/")[0]
                with partner._lock:
                    partner._in_progress[segment] += 1
                    partner.max_in_progress[segment] = max(partner.max_in_progress[segment],
                                                           partner._in_progress[segment])
                try:
                    status, headers = partner._respond(self.command, self.path,
                                                       dict(self.headers.items()), body)
                finally:
                    with partner._lock:
                        partner._in_progress[segment] -= 1
                answer = EXPLAINED if segment == "explain" else LONG if segment == "long" else b"ok"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": POLL_INTERVAL})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _respond(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests.append(Received(method, path, headers, body, time.monotonic()))
            key = urllib.parse.urlsplit(path).path
            self._hits[key] += 1
            hits = self._hits[key]
        parts = key.strip("/").split("/")
        kind, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        if kind == "status":
            return int(arg), {}
        if kind == "flaky":
            return (503, {}) if hits <= int(arg) else (200, {})
        if kind == "retry-after":
            value = urllib.parse.unquote(arg)
            return (429, {"Retry-After": value}) if hits == 1 else (200, {})
        if kind == "slow":
            time.sleep(float(arg))
            return 200, {}
        if kind == "switch":
            return (503, {}) if arg in self.failing else (200, {})
        if kind == "redirect":
            return 302, {"Location": self.url("/ok")}
        if kind == "explain":  # a status with a body that says why
            return int(arg), {"Content-Type": "application/json", "X-Request-Id": "r-1"}
        if kind == "long":  # a body longer than what is kept, cut inside a character
            return 200, {"Content-Type": "text/plain; charset=utf-8"}
        return 200, {}

    def received(self, path_prefix: str = "") -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def __enter__(self) -> Partner:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
