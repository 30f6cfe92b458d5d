"""`Client`: runs the shared plans (`_base.Core`) with `httpx.Client` and `time.sleep`."""

from __future__ import annotations

import builtins
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from notify_relay_client._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    UNSET,
    Call,
    Core,
    Plan,
    Reply,
    Retries,
    Step,
    _Unset,
    http_options,
)
from notify_relay_client._models import (
    BatchItemError,
    Destination,
    Message,
    MessageStatus,
    ReplayResult,
    Submission,
    SubmitOptions,
    SubmitResult,
)

T = TypeVar("T")


class Client:
    """The notify-relay API for one sender, synchronous.

    `api_key` authenticates (`Authorization: Bearer`); on a server without keys,
    `sender_id` names the sender. `auth` takes any `httpx.Auth` (see `for_aws` for SigV4).
    Every call is retried up to `max_retries` times on connection errors, timeouts, 408,
    429 and 5xx, with full-jitter backoff or the server's `Retry-After`: safe, since
    submissions carry their `messageId`, retry and cancel re-read the message when a
    repeat meets the state they left, and the rest are reads; replay alone, which is not
    idempotent, is retried only when the server surely did not act on it.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 sender_id: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, retries: Retries | None = None,
                 auth: httpx.Auth | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._core = Core(sender_id=sender_id, retries=retries or Retries(max_retries))
        self._http = httpx.Client(**http_options(base_url, api_key, timeout, headers),
                                  auth=auth, transport=transport)

    @classmethod
    def for_aws(cls, base_url: str, region: str, session: Any = None,
                **options: Any) -> Client:
        """A client of the AWS deployment: requests signed with SigV4 (service
        `execute-api`) by the credentials of `session` (a boto3 or botocore session;
        default: botocore's default chain). Needs the `aws` extra."""
        from notify_relay_client._sigv4 import SigV4Auth

        return cls(base_url, auth=SigV4Auth(region, session), **options)

    # running plans

    def _step(self, step: Step) -> Reply:
        if not isinstance(step, Call):
            time.sleep(step.seconds)
            return None
        try:
            return self._http.request(step.method, step.path, params=step.params,
                                      json=step.json, headers=step.headers)
        except httpx.TransportError as exc:
            return exc

    def _run(self, plan: Plan[T]) -> T:
        reply: Reply = None
        try:
            while True:
                reply = self._step(plan.send(reply))
        except StopIteration as done:
            result: T = done.value
            return result

    # messages

    def submit(self, target_url: str, *, correlation_id: str | None = None,
               **options: Unpack[SubmitOptions]) -> SubmitResult:
        """Submit one notification; see `SubmitOptions` for the fields."""
        return self._run(self._core.submit(Submission(target_url, **options), correlation_id))

    def submit_batch(self, submissions: Sequence[Submission]
                     ) -> builtins.list[SubmitResult | BatchItemError]:
        """Submit 1-100 notifications in one request; a result per item, in order."""
        return self._run(self._core.submit_batch(submissions))

    def get(self, message_id: str) -> Message:
        return self._run(self._core.get(message_id))

    def retry(self, message_id: str) -> Message:
        """Send a FAILED or CANCELLED message again with a fresh attempt budget."""
        return self._run(self._core.retry(message_id))

    def cancel(self, message_id: str) -> Message:
        """Stop a QUEUED or RETRYING message."""
        return self._run(self._core.cancel(message_id))

    def replay(self, *, destination: str | None = None, since: datetime | str | None = None,
               until: datetime | str | None = None, limit: int | None = None) -> ReplayResult:
        """Retry by hand the FAILED messages that match."""
        return self._run(self._core.replay(destination, since, until, limit))

    def wait_for(self, message_id: str, timeout: float = 30.0,
                 statuses: Collection[MessageStatus | str] | None = None) -> Message:
        """The message once its status is final (or in `statuses`); WaitTimeoutError if not
        within `timeout` seconds."""
        return self._run(self._core.wait_for(message_id, timeout, statuses))

    def list(self, status: MessageStatus | str | None = None, *,
             page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Message]:
        """All the sender's messages (newest first), fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self._run(self._core.list_page(status, page_size, cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # destinations

    def destinations(self, state: str | None = None, *,
                     page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Destination]:
        """All the sender's destinations, by name, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self._run(self._core.destinations_page(state, page_size, cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def destination(self, name: str) -> Destination:
        return self._run(self._core.destination(name))

    def pause(self, name: str) -> Destination:
        return self._run(self._core.update_destination(name, paused=True))

    def resume(self, name: str) -> Destination:
        return self._run(self._core.update_destination(name, paused=False))

    def update_destination(self, name: str, *, paused: bool | None = None,
                           max_concurrency: int | _Unset | None = UNSET,
                           rate_per_second: float | _Unset | None = UNSET) -> Destination:
        """Change a destination's settings; None restores the server default."""
        return self._run(self._core.update_destination(
            name, paused=paused, max_concurrency=max_concurrency,
            rate_per_second=rate_per_second))

    # lifetime

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
