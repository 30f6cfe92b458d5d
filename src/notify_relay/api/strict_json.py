"""Request bodies read as strict JSON: what json.loads lets through, refused as malformed.

json.loads takes NaN and Infinity (not JSON: sent on, they make invalid JSON), reads
1e999999 as infinity, keeps the last of two equal keys (so `targetUrl` twice is silently
one of them), and fails with RecursionError or an integer-length ValueError on hostile
input, which the framework reported as an unnamed HTTP_ERROR. Each becomes a
JSONDecodeError, reported as VALIDATION_ERROR for the whole body (field "").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a number")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} is given twice")
        result[key] = value
    return result


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constants,
                            parse_float=_finite)


# made once: json.loads with hooks builds a decoder and its scanner for every body, 0.8 % of
# the API process's CPU at saturation. One for the loop's thread, one for _DEEP_PARSER's.
_DECODER = _decoder()
_DEEP_DECODER = _decoder()
_BOM = "\ufeff"


def loads(body: bytes, decoder: json.JSONDecoder = _DECODER) -> Any:
    """Parse `body` as RFC 8259 JSON in UTF-8; JSONDecodeError for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
    if text.startswith(_BOM):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return decoder.decode(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    except ValueError as exc:  # our hooks, and integers beyond the interpreter's digit limit
        reason = str(exc)
        if reason.startswith("Exceeds the limit"):  # said in JSON's terms, not Python's
            reason = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise json.JSONDecodeError(reason, "", 0) from None


# where FastSubmit leaves the body it parsed, for the route it hands a request on to: parsed
# again there, deeper in the stack, a body nested ~965 levels that the fast path took was
# "nested too deeply", a 400 where a 429 (rate limit) or the real field's error was due
PARSED_BODY = "notify_relay.parsed_body"


# more brackets than this and a route's body may be nested deeper than the stack left at a
# route allows the parser (which recurses): it is parsed on a thread of its own, whose stack
# is empty. A batch, two levels deeper than its items' bodies and parsed deeper in the stack
# than FastSubmit parses a submission, refused as a whole (400) a batch with one item whose
# body POST /v1/messages takes (nested 954-970 levels; found by helper-49)
THREAD_PARSE_BRACKETS = 900
# one thread: one such parse at a time, as on the loop (the parse holds the GIL anyway);
# the default executor ran six at once (8 batches of 5 MiB: 863 MiB, helper-51) and is the
# one aiohttp's resolver uses for deliveries' DNS
_DEEP_PARSER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                     thread_name_prefix="deep-json")


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            parsed = self.scope.get(PARSED_BODY, self)
            if parsed is self:
                body = await self.body()
                if body.count(b"[") + body.count(b"{") > THREAD_PARSE_BRACKETS:
                    parsed = await asyncio.get_running_loop().run_in_executor(
                        _DEEP_PARSER, loads, body, _DEEP_DECODER)
                else:
                    parsed = loads(body)
            self._json = parsed
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by `loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
