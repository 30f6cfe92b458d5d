"""uvicorn's httptools protocol with the limits it lacks: what a hostile client can hold.

httptools buffers a header of any size (one unterminated 200 MiB header took the server
from 67 to 449 MiB and stalled it for 45 s), takes any number of headers, and waits for a
body or a head forever. Here:
- the request head is at most MAX_HEAD_BYTES, its fields at most MAX_FIELD_BYTES in all
  and MAX_FIELDS in number: beyond, a 431 problem, and the connection closes;
- the head must arrive within `head_timeout` of the connection or the previous request,
  the whole request within `request_timeout`: beyond, a 408 problem (if nothing was
  answered yet) and the connection closes.
A head that httptools cannot parse (a request line over its limit, bad framing) gets a 400
problem rather than uvicorn's plain text, and so does a request beyond uvicorn's
`limit_concurrency` (a 503 SYSTEM_ERROR with Retry-After). Each of these answers carries an
X-Correlation-Id, as every answer does: the caller's, when its field was read before the
refusal, else a new one, and leaves a log line with it.

A request refused while earlier ones of its connection (pipelined) still wait for their
answers gets none, and neither do they: the connection closes at once. Written at once, the
refusal would be taken for the first request's answer (a stored submission read as
refused); held back until their answers are out, it kept the connection read and parsed
with the limits off. A client whose requests get no answer sends them again, which the
contract makes safe. The size of a body is the BodyGuard's business (413).

A submission (POST /v1/messages) is handed to `submissions` (plain_submit.py) in place of
the app, when there is one: it answers a plain one itself and hands the rest to the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import orjson
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from notify_relay.api.head_with_body import HeadWithBody
from notify_relay.api.middleware import valid_correlation_id
from notify_relay.context import new_correlation_id

if TYPE_CHECKING:
    from notify_relay.api.plain_submit import PlainSubmissions

log = logging.getLogger("notify_relay.api")
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 100
MAX_HEAD_BYTES = MAX_FIELD_BYTES + 16 * 1024  # the request line and the framing on top
# (status, title, code, detail) of the answers given before the app runs
Refusal = tuple[int, str, str, str]
TOO_LARGE: Refusal = (
    431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE",
    f"request header fields are limited to {MAX_FIELD_BYTES // 1024} KiB in all and "
    f"{MAX_FIELDS} fields")
TOO_SLOW: Refusal = (408, "Request Timeout", "REQUEST_TIMEOUT",
                     "the request did not arrive in time")
UNPARSABLE: Refusal = (400, "Bad Request", "VALIDATION_ERROR",
                       "the request is not valid HTTP/1.1 (a request line over 64 KiB, say)")
# the parser takes what follows the head of a request that asks to switch protocols for
# the new protocol's, so its body would never be read: it would be answered as if it had none
UPGRADE_WITH_BODY: Refusal = (
    400, "Bad Request", "VALIDATION_ERROR",
    "this server does not switch protocols: send a request with a body without "
    "`Connection: upgrade`")
BUSY: Refusal = (503, "Service Unavailable", "SYSTEM_ERROR",
                 "the server has as many connections and requests in progress as it takes; "
                 "try again shortly")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a head (uvicorn's, names in lower case) announces a body."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length"
                                            and value.strip().lstrip(b"0")):  # 00 is 0
            return True
    return False


def problem_response(refusal: Refusal, correlation_id: str,
                     extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response carrying a problem document, for before the app runs;
    `correlation_id` is a checked one (valid_correlation_id) or a new one."""
    status, title, code, detail = refusal
    document: dict[str, object] = {"type": "about:blank", "title": title, "status": status,
                                   "detail": detail, "code": code,
                                   "correlationId": correlation_id}
    if code == "VALIDATION_ERROR":  # as every other: the request as a whole, field ""
        document["errors"] = [{"field": "", "message": detail}]
    body = orjson.dumps(document)
    head = [f"HTTP/1.1 {status} {title}".encode()]
    head += [name + b": " + value for name, value in extra_headers]
    head += [b"content-type: application/problem+json",
             b"x-correlation-id: " + correlation_id.encode(),
             b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def guarded_protocol(head_timeout: float, request_timeout: float,
                     submissions: PlainSubmissions | None = None) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn is given, with these timeouts."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"head_timeout": head_timeout, "request_timeout": request_timeout,
                 "submissions": submissions})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    head_timeout = 10.0
    request_timeout = 60.0
    submissions: PlainSubmissions | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._field_bytes = 0
        self._fields = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._given_id: str | None = None  # this request's X-Correlation-Id, once read
        self._id_read = False  # the first X-Correlation-Id field decides, as in the middleware
        # a request asked to switch protocols: answered, then the connection closes, and
        # nothing after it is read (see on_headers_complete)
        self._upgrade_asked = False

    def _should_upgrade(self) -> bool:
        """Never: no protocol but HTTP/1.1 is served (see on_headers_complete), whatever
        WebSocket library uvicorn finds (uvicorn_config also sets ws="none", so that it
        loads none)."""
        return False

    def _answers_pending(self) -> bool:
        """Earlier requests of this connection, read whole, still waiting for answers."""
        cycle = self.cycle
        return bool(self.pipeline) or (
            cycle is not None and not cycle.more_body and not cycle.response_complete)

    def _refuse(self, refusal: Refusal) -> None:
        self._cancel_timers()
        if self.transport.is_closing():  # refused already: nothing more is answered
            return
        cid = self._given_id or new_correlation_id()
        status, _, code, detail = refusal
        pending = self._answers_pending()
        log.info("request refused", extra={
            "status": status, "code": code, "detail": detail, "correlationId": cid,
            "answered": not pending})
        if not pending:
            headers = list(self.server_state.default_headers)
            if status == 503:
                headers.append((b"retry-after", b"1"))
            self.transport.write(problem_response(refusal, cid, headers))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's two warnings (one of them advice to install a WebSocket library), which
        any client could have written at will: on_headers_complete has dealt with it."""
        if self._upgrade_asked:
            log.info("a request asked to switch protocols: answered over HTTP/1.1, and the "
                     "connection closes after it")

    def send_400_response(self, msg: str) -> None:
        """What httptools could not parse: a problem, not uvicorn's plain text."""
        self._refuse(UNPARSABLE)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._request_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._request_timer = None

    def _timed_out(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and cycle.response_started:
            # answered before its own body came whole: no 408 can follow that answer (its
            # head may still be held for the body: the cycle's transport sends it first)
            self._cancel_timers()
            cycle.transport.close()
        else:  # its own request is late, or the next one's head (after earlier answers)
            self._refuse(TOO_SLOW)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._timed_out)
            self._request_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is a slow head too

    def data_received(self, data: bytes) -> None:
        if self._upgrade_asked:  # the other protocol's, or whatever: never read as HTTP
            return
        if self._in_head:
            self._arm()
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._field_bytes = self._fields = 0
        self._given_id = None
        self._id_read = False
        self._arm()  # a pipelined request's head may have come with the previous one

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._field_bytes += len(name) + len(value)
        if self._fields > MAX_FIELDS or self._field_bytes > MAX_FIELD_BYTES:
            self._refuse(TOO_LARGE)
            return
        if not self._id_read and name.lower() == b"x-correlation-id":
            self._id_read = True
            self._given_id = valid_correlation_id(value.decode("latin-1"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limit = self.limit_concurrency  # uvicorn's own test, answered as a problem
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._refuse(BUSY)
            return
        # No protocol but HTTP/1.1 is served. The parser takes what follows the head of a
        # request that asks to switch for the new protocol's: a body would never be read
        # (refused), and the bytes after it, if read as HTTP, were out of step (a body run
        # as a request, a pipelined request's answer taken for another's; helper-69). So
        # such a request is answered with `Connection: close`, and nothing after it is read.
        upgrade = self.parser.should_upgrade()
        if upgrade and _has_body(self.headers):
            self._refuse(UPGRADE_WITH_BODY)
            return
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle and self.cycle is not None:  # not an upgrade: a request
            HeadWithBody.install(self.cycle)
            if upgrade:
                self._upgrade_asked = True
                self.cycle.keep_alive = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        submissions = self.submissions
        if submissions is not None and submissions.takes(cycle.scope):
            # uvicorn's ASGI types and Starlette's name the same thing
            app = cast("ASGI3Application", submissions.bind(cycle, cast("Any", app)))
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:  # a refused request's is not the cycle's
        if self.cycle is not None and not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timers()
        self._in_head = True  # what comes next is the head of the next request
        self._head_bytes = 0
        if self.cycle is not None and not self.transport.is_closing():
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)
