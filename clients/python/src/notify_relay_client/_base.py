"""What the sync and async clients share: every operation as a *plan*, without I/O.

A plan is a generator that yields steps (`Call`: send this request; `Sleep`: wait) and is
sent back each call's reply (an `httpx.Response`, or the `httpx.TransportError` that stood
in for one). Request building, retry decisions, backoff, response parsing and typed errors
all live here; `Client` and `AsyncClient` only run plans (`_sync.py`, `_async.py`: a loop
each), so no method is written twice.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
import urllib.parse
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from notify_relay_client._errors import (
    ApiError,
    InvalidStateError,
    TransportError,
    WaitTimeoutError,
    api_error,
)
from notify_relay_client._models import (
    FINAL_STATUSES,
    BatchItemError,
    Destination,
    Message,
    MessageStatus,
    Page,
    ReplayResult,
    Submission,
    SubmitResult,
    batch_item,
    format_time,
)

__version__ = "0.1.0"
T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_PAGE_SIZE = 100
# answers worth asking again: the request was not processed, or can be repeated safely
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to make; `json` None means no body."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Step = Call | Sleep
Reply = httpx.Response | httpx.TransportError | None
Plan = Generator[Step, Reply, T]


class _Unset(enum.Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET


# --- retries: pure functions --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Retries:
    """How the client repeats a call: at most `max_retries` more tries, after a full-jitter
    exponential delay (`initial_delay` doubling up to `max_delay`) or the server's
    `Retry-After`, which is honoured up to `max_retry_after` (longer: raise at once)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0


def retryable_error(exc: httpx.TransportError) -> bool:
    """No answer, and asking again may get one (httpx's exception tree)."""
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def may_have_reached(reply: Reply) -> bool:
    """Whether the server may have acted on a request that got this reply."""
    if isinstance(reply, httpx.ConnectError | httpx.ConnectTimeout):
        return False  # never sent
    if isinstance(reply, httpx.TransportError):
        return True
    return reply is not None and (reply.status_code >= 500 or reply.status_code == 408)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = time.time() if now is None else now
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def backoff(retry: int, retries: Retries, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_delay, initial_delay * 2**retry))."""
    return rand() * min(retries.max_delay, retries.initial_delay * 2.0 ** retry)


def retry_delay(reply: Reply, retry: int, retries: Retries,
                rand: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait before asking again after `reply` (the try numbered `retry`, from 0),
    or None: do not ask again (a final answer, no retries left, or too long a wait)."""
    if retry >= retries.max_retries:
        return None
    if isinstance(reply, httpx.TransportError):
        return backoff(retry, retries, rand) if retryable_error(reply) else None
    if reply is None or reply.status_code not in RETRY_STATUSES:
        return None
    after = parse_retry_after(reply.headers.get("retry-after"))
    if after is None:
        return backoff(retry, retries, rand)
    return after if after <= retries.max_retry_after else None


# --- responses ----------------------------------------------------------------------------

def error_of(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer, problem details or not."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        text = " ".join(response.text.split())[:200]
        body = {"detail": text or response.reason_phrase or f"HTTP {response.status_code}"}
    return api_error(response.status_code, body,
                     correlation_id=response.headers.get("x-correlation-id"),
                     retry_after=parse_retry_after(response.headers.get("retry-after")))


def json_of(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; any other answer raises its typed error."""
    if not response.is_success:
        raise error_of(response)
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, "INVALID_RESPONSE",
                       f"{response.request.method} {response.request.url.path} answered "
                       f"{response.status_code} without JSON",
                       correlation_id=response.headers.get("x-correlation-id")) from None


def segment(value: str) -> str:
    """`value` as one percent-encoded path segment (`.` and `..` kept literal too)."""
    quoted = urllib.parse.quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) <= {"."} else quoted


@dataclass(frozen=True, slots=True)
class Exchanged:
    """A call's last answer, and whether an earlier try may have been acted on."""

    response: httpx.Response
    doubt: bool


def http_options(base_url: str, api_key: str | None, timeout: float,
                 headers: Mapping[str, str] | None) -> dict[str, Any]:
    """The keyword arguments of `httpx.Client` and `httpx.AsyncClient` alike."""
    sent = {"User-Agent": f"notify-relay-client-python/{__version__}",
            "Accept": "application/json, application/problem+json"}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    sent.update(headers or {})
    return {"base_url": base_url.rstrip("/"), "headers": sent, "timeout": timeout,
            "follow_redirects": False}


# --- the operations -----------------------------------------------------------------------

class Core:
    """Every operation of the API as a plan, for one sender."""

    def __init__(self, *, sender_id: str | None = None, retries: Retries | None = None,
                 poll_interval: float = 0.1, max_poll_interval: float = 2.0) -> None:
        self.sender_id = sender_id
        self.retries = retries or Retries()
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def _query(self, **params: str | int | None) -> dict[str, str]:
        query = {k: str(v) for k, v in params.items() if v is not None}
        if self.sender_id:
            query["senderId"] = self.sender_id
        return query

    def exchange(self, call: Call, *, repeatable: bool = True) -> Plan[Exchanged]:
        """`call`, repeated per `retries`; its last answer, or TransportError.

        `repeatable=False`: a call that is not safe to repeat once it may have been acted
        on (replay: a second try would replay up to `limit` more) is retried only when the
        server surely did not act on it."""
        doubt = False
        retry = 0
        while True:
            reply = yield call
            delay = retry_delay(reply, retry, self.retries)
            if not repeatable and may_have_reached(reply):
                delay = None
            if delay is None:
                if isinstance(reply, httpx.TransportError):
                    raise TransportError(
                        f"{call.method} {call.path}: no answer after {retry + 1} "
                        f"tr{'y' if retry == 0 else 'ies'}: {reply!s} "
                        f"({type(reply).__name__})") from reply
                if reply is None:
                    raise RuntimeError("a call was answered with nothing")
                return Exchanged(reply, doubt)
            doubt = doubt or may_have_reached(reply)
            retry += 1
            yield Sleep(delay)

    def _json(self, call: Call) -> Plan[Any]:
        exchanged = yield from self.exchange(call)
        return json_of(exchanged.response)

    # messages

    def submit(self, submission: Submission, correlation_id: str | None = None) -> Plan[
            SubmitResult]:
        """A repeat gets 200 `duplicate`: the `messageId` makes every retry safe."""
        body = submission.with_id().to_json(self.sender_id)
        headers = {"X-Correlation-Id": correlation_id} if correlation_id else None
        data = yield from self._json(Call("POST", "/v1/messages", json=body, headers=headers))
        return SubmitResult.from_json(data)

    def submit_batch(self, submissions: Sequence[Submission]) -> Plan[
            list[SubmitResult | BatchItemError]]:
        """Every item gets its `messageId` before the first try: the whole batch is safe
        to send again."""
        items = [s.with_id().to_json(self.sender_id) for s in submissions]
        data = yield from self._json(Call("POST", "/v1/messages/batch",
                                          json={"messages": items}))
        return [batch_item(item) for item in data["items"]]

    def get(self, message_id: str) -> Plan[Message]:
        data = yield from self._json(Call("GET", f"/v1/messages/{segment(message_id)}",
                                          params=self._query()))
        return Message.from_json(data)

    def list_page(self, status: MessageStatus | str | None, limit: int,
                  cursor: str | None) -> Plan[Page[Message]]:
        data = yield from self._json(Call("GET", "/v1/messages", params=self._query(
            status=None if status is None else str(status), limit=limit, cursor=cursor)))
        return Page(tuple(Message.from_json(m) for m in data["items"]), data["nextCursor"])

    def _change(self, message_id: str, action: str, done: Collection[MessageStatus]) -> Plan[
            Message]:
        """retry or cancel. When a try may have been acted on (no answer, or a 5xx) and a
        later one gets 409 INVALID_STATE, the message is read again: if it is where the
        action leads (`done`), the earlier try is taken to have done it."""
        exchanged = yield from self.exchange(Call(
            "POST", f"/v1/messages/{segment(message_id)}/{action}", params=self._query()))
        try:
            return Message.from_json(json_of(exchanged.response))
        except InvalidStateError:
            if not exchanged.doubt:
                raise
            message = yield from self.get(message_id)
            if message.status in done:
                return message
            raise

    def retry(self, message_id: str) -> Plan[Message]:
        return self._change(message_id, "retry", {
            MessageStatus.QUEUED, MessageStatus.DELIVERING, MessageStatus.RETRYING,
            MessageStatus.DELIVERED})

    def cancel(self, message_id: str) -> Plan[Message]:
        return self._change(message_id, "cancel", {MessageStatus.CANCELLED})

    def replay(self, destination: str | None, since: datetime | str | None,
               until: datetime | str | None, limit: int | None) -> Plan[ReplayResult]:
        selection = {"destination": destination,
                     "since": format_time(since) if since else None,
                     "until": format_time(until) if until else None, "limit": limit}
        exchanged = yield from self.exchange(Call(
            "POST", "/v1/messages/replay", params=self._query(),
            json={k: v for k, v in selection.items() if v is not None}), repeatable=False)
        return ReplayResult.from_json(json_of(exchanged.response))

    def wait_for(self, message_id: str, timeout: float,
                 statuses: Collection[MessageStatus | str] | None) -> Plan[Message]:
        """Polls, every `poll_interval` growing by half up to `max_poll_interval`, until the
        message's status is in `statuses` (default: final)."""
        wanted = {MessageStatus(s) for s in statuses} if statuses else FINAL_STATUSES
        deadline = time.monotonic() + timeout
        interval = self.poll_interval
        while True:
            message = yield from self.get(message_id)
            if message.status in wanted:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(message, timeout)
            yield Sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval)

    # destinations

    def destinations_page(self, state: str | None, limit: int,
                          cursor: str | None) -> Plan[Page[Destination]]:
        data = yield from self._json(Call("GET", "/v1/destinations", params=self._query(
            state=state, limit=limit, cursor=cursor)))
        return Page(tuple(Destination.from_json(d) for d in data["items"]), data["nextCursor"])

    def destination(self, name: str) -> Plan[Destination]:
        data = yield from self._json(Call("GET", f"/v1/destinations/{segment(name)}",
                                          params=self._query()))
        return Destination.from_json(data)

    def update_destination(self, name: str, *, paused: bool | None = None,
                           max_concurrency: int | _Unset | None = UNSET,
                           rate_per_second: float | _Unset | None = UNSET) -> Plan[Destination]:
        """PATCH: a setting left UNSET stays as it is; None restores the server default."""
        changes: dict[str, Any] = {}
        if paused is not None:
            changes["paused"] = paused
        if max_concurrency is not UNSET:
            changes["maxConcurrency"] = max_concurrency
        if rate_per_second is not UNSET:
            changes["ratePerSecond"] = rate_per_second
        data = yield from self._json(Call("PATCH", f"/v1/destinations/{segment(name)}",
                                          params=self._query(), json=changes))
        return Destination.from_json(data)
