"""POST /v1/messages without FastAPI's request machinery, for the submissions it accepts.

Every submission pays for routing, the Request and its dependency solving, the body's
validation through FastAPI's field wrappers and its exception middleware (without them
the server's CPU a message went 0.86 -> 0.74 ms, bench/run.py). Here an accepted (or duplicate)
submission is parsed by the same strict reader, validated by the same model, authenticated
once, and answered with the same document. Whatever is not plainly acceptable (a body
that does not parse or validate, a key that is refused, a sender over its rate) goes on to
the FastAPI route with the same body, so that each error is the route's own; a refusal of
the Relay itself (a conflict, the store) is answered as the route's exception handler
would.

Two ways in, one judgement (`judge`, `answer`): FastSubmit, the innermost ASGI middleware,
for any ASGI server (the Lambda's too), and plain_submit.py, which uvicorn's protocol hands
a submission before any ASGI layer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from notify_relay.api.middleware import header, is_submission, replaying
from notify_relay.api.problems import JSONResponse, domain_problem
from notify_relay.api.strict_json import PARSED_BODY, loads
from notify_relay.api.submission import Submission
from notify_relay.api.views import submit_view
from notify_relay.context import correlation_id
from notify_relay.cycles import release_frames
from notify_relay.domain.errors import NotifyRelayError
from notify_relay.runtime import Runtime
from notify_relay.service import Accepted

UNPARSED = object()
# in a scope whose submission was judged already (plain_submit.py): the route answers it
JUDGED = "notify_relay.judged"


class HandOn:
    """Not plainly acceptable: the route answers, with the body as it was parsed here (or
    UNPARSED)."""

    __slots__ = ("parsed",)

    def __init__(self, parsed: Any) -> None:
        self.parsed = parsed


async def judge(rt: Runtime, scope: Scope, body: bytes, cid: str,
                ) -> Accepted | NotifyRelayError | HandOn:
    """The Relay's answer to a plainly acceptable submission, or HandOn."""
    parsed: Any = UNPARSED
    try:
        parsed = loads(body)
        submission = Submission.model_validate(parsed)
        sender = rt.auth.sender_of(scope, header(scope, b"authorization"), submission.senderId)
    except (json.JSONDecodeError, ValidationError, NotifyRelayError):
        refused = True  # the route names what is wrong; called once this error is gone,
    else:  # not while it is handled (it would be the context of the route's own)
        refused = False
    if refused or (rt.limiter is not None
                   and rt.limiter.acquire(sender, time.monotonic()) > 0):
        return HandOn(parsed)  # a rate refused there too: 429
    try:
        accepted = await rt.relay.submit(submission.to_new_message(), sender, cid)
    except NotifyRelayError as exc:
        return exc
    rt.relay.observer.submission("duplicate" if accepted.duplicate else "accepted")
    return accepted


def answer(verdict: Accepted | NotifyRelayError, cid: str) -> Response:
    """What the route (or its exception handler) would answer; without X-Correlation-Id,
    which the correlation id's middleware adds."""
    if isinstance(verdict, NotifyRelayError):
        response: Response = domain_problem(verdict)
        release_frames(verdict)
        return response
    return JSONResponse(
        submit_view(verdict.message, duplicate=verdict.duplicate, correlation_id=cid),
        status_code=200 if verdict.duplicate else 202)


class FastSubmit:
    """Pure ASGI, innermost: the body guard and the correlation id have run."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_submission(scope) or JUDGED in scope:
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # gone before its body came
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replay = replaying(body, receive)
        cid = correlation_id.get() or ""
        verdict = await judge(self.rt, scope, body, cid)
        if isinstance(verdict, HandOn):
            await hand_on(self.app, scope, replay, send, verdict.parsed)
        else:
            await answer(verdict, cid)(scope, replay, send)


async def hand_on(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                  parsed: Any) -> None:
    """To the route, with the body parsed here (strict_json.PARSED_BODY), which leaves the
    scope with the route: uvicorn keeps a connection's last scope until its next request,
    and 12 idle connections held 250 MiB of parsed bodies (helper-51)."""
    if parsed is not UNPARSED:
        scope[PARSED_BODY] = parsed
    try:
        await app(scope, receive, send)
    finally:
        scope.pop(PARSED_BODY, None)
