"""POST /v1/messages as uvicorn's protocol reads it, before any ASGI layer.

A submission went through eleven ASGI layers before FastSubmit judged it: FastAPI's and
Starlette's own, then the correlation id's, HEAD's, the owner's, the key-less guard, the
refusals' count and the body guard, each awaiting the next with closures over `receive`
and `send`. The guarded protocol (guarded_protocol.py) hands this module every POST
/v1/messages instead. When the request is plain (its body came whole with its head,
labelled JSON, within the limit, and the key-less guard lets it through), it is judged here
by FastSubmit's own judgement and answered on uvicorn's own request cycle, with what the
layers would have added: its correlation id, its log lines' context, the count of a
refusal. Anything else, and every submission that is not plainly acceptable, goes to the
whole ASGI app as before, with the body and what was parsed of it
(bench/run.py, 20,000 messages, four pairs alternated: the API process's CPU a message
in the harness's 1.32-1.42 against 1.50-1.51, the server's 2.78-2.93 against 3.00-3.03).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from notify_relay.api.fast_submit import JUDGED, HandOn, answer, hand_on, judge
from notify_relay.api.middleware import (
    MAX_BODY_BYTES,
    KeylessGuard,
    count_rejected,
    header,
    internal_error,
    is_json,
    is_submission,
    replaying,
    valid_correlation_id,
)
from notify_relay.api.strict_json import THREAD_PARSE_BRACKETS
from notify_relay.context import correlation_id, new_correlation_id, request_line
from notify_relay.runtime import Runtime

if TYPE_CHECKING:  # the Lambda's API (Mangum) has no uvicorn, and never gets here
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

log = logging.getLogger("notify_relay.api")


class PlainSubmissions:
    """Made with the app (create_app), given to the protocol (uvicorn_config)."""

    def __init__(self, rt: Runtime, guard: KeylessGuard | None,
                 limit: int = MAX_BODY_BYTES) -> None:
        """`guard`: the key-less server's; None with API keys."""
        self.rt = rt
        self.guard = guard
        self.limit = limit

    @staticmethod
    def takes(scope: Mapping[str, Any]) -> bool:
        return is_submission(cast("Scope", scope))

    def bind(self, cycle: RequestResponseCycle,
             app: ASGIApp) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI app this one request's cycle runs in place of `app`."""

        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            await self._submit(cycle, app, scope, receive, send)

        return run

    def _plain(self, cycle: RequestResponseCycle, scope: Scope) -> bool:
        # the cycle's task starts after the data that held the head is parsed: a body sent
        # with its head is whole by then (cycle.body), a later one is read through the app
        body = cycle.body
        return (not cycle.more_body and not cycle.waiting_for_100_continue
                and len(body) <= self.limit
                # how deep a body may nest before the parser refuses it depends on how deep
                # in the stack it is parsed: here 8-9 levels more than through the app's
                # layers (helper-67), so a body nested 970-980 levels was taken here and
                # refused when the same bytes came in two pieces
                and body.count(b"[") + body.count(b"{") <= THREAD_PARSE_BRACKETS
                and is_json(header(scope, b"content-type") or "")
                and (self.guard is None or self.guard.refusal(scope) is None))

    async def _submit(self, cycle: RequestResponseCycle, app: ASGIApp, scope: Scope,
                      receive: Receive, send: Send) -> None:
        if not self._plain(cycle, scope):
            await app(scope, receive, send)
            return
        # taken as the cycle's receive() gives it, which leaves the cycle without it: a kept
        # connection holds its last cycle until the next request (helper-67: 600 idle
        # connections held 35 MiB of bodies), and reads on as it does
        body, cycle.body = bytes(cycle.body), bytearray()
        cycle.flow.resume_reading()
        cid = valid_correlation_id(header(scope, b"x-correlation-id")) or new_correlation_id()
        token = correlation_id.set(cid)
        line_token = request_line.set((scope["method"], scope["path"]))
        try:
            verdict = await judge(self.rt, scope, body, cid)
            if not isinstance(verdict, HandOn):
                response = answer(verdict, cid)
                count_rejected(self.rt.relay.observer, response.status_code)
                await self._send(cycle, response, cid, send)
                return
        except Exception:  # as the correlation id's middleware: a problem, not a traceback
            log.exception("unexpected failure")  # (and, as there, not counted as a refusal)
            if cycle.response_started:
                raise
            await self._send(cycle, internal_error(), cid, send)
            return
        finally:
            correlation_id.reset(token)
            request_line.reset(line_token)
        # the route's, through every layer, which receive the body first
        scope[JUDGED] = True
        try:
            await hand_on(app, scope, replaying(body, receive), send, verdict.parsed)
        finally:
            del scope[JUDGED]

    @staticmethod
    async def _send(cycle: RequestResponseCycle, response: Response, cid: str,
                    send: Send) -> None:
        headers = [*response.raw_headers, (b"x-correlation-id", cid.encode())]
        if not write_whole(cycle, response.status_code, headers, response.body):
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": headers})
            await send({"type": "http.response.body", "body": response.body})


def write_whole(cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]],
                body: bytes | memoryview) -> bool:
    """The answer as the cycle's two `send`s would write it, in one write, when nothing
    but writing is left for them to do: the connection is kept, open and not paused, and
    no access log is kept. False when the sends must do it (tests/integration/
    test_plain_submit.py checks that both write the same bytes)."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE  # loaded: the cycle's

    if (cycle.response_started or cycle.disconnected or not cycle.keep_alive
            or cycle.access_log or cycle.flow.write_paused):
        return False
    parts: list[bytes | memoryview] = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name.lower(), b": ", value, b"\r\n")
    parts += (b"\r\n", body)
    cycle.transport.write(b"".join(parts))  # before response_started: HeadWithBody passes it
    cycle.response_started = cycle.response_complete = True
    cycle.message_event.set()
    cycle.on_response()
    return True
