"""A partner whose answers are built to attack a console that renders them as HTML."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from tests.partner import POLL_INTERVAL

# each would run script or change the page if it were parsed as HTML
HOSTILE_BODY = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
HOSTILE_TYPE = 'text/html"><svg onload="window.__pwned=3">'


class HostilePartner:
    """Answers every request 400 (a permanent failure) with a hostile body and headers."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = HOSTILE_BODY.encode()
                self.send_response(400)
                self.send_header("Content-Type", HOSTILE_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": POLL_INTERVAL})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostilePartner:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
