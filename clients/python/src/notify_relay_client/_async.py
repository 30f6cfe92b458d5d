"""`AsyncClient`: runs the shared plans (`_base.Core`) with `httpx.AsyncClient` (asyncio)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
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


class AsyncClient:
    """`Client`, with `await`: the same arguments, methods and behaviour; `list` and
    `destinations` are async iterators."""

    def __init__(self, base_url: str, api_key: str | None = None, *,
                 sender_id: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, retries: Retries | None = None,
                 auth: httpx.Auth | None = None, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._core = Core(sender_id=sender_id, retries=retries or Retries(max_retries))
        self._http = httpx.AsyncClient(**http_options(base_url, api_key, timeout, headers),
                                       auth=auth, transport=transport)

    @classmethod
    def for_aws(cls, base_url: str, region: str, session: Any = None,
                **options: Any) -> AsyncClient:
        """See `Client.for_aws`."""
        from notify_relay_client._sigv4 import SigV4Auth

        return cls(base_url, auth=SigV4Auth(region, session), **options)

    # running plans

    async def _step(self, step: Step) -> Reply:
        if not isinstance(step, Call):
            await asyncio.sleep(step.seconds)
            return None
        try:
            return await self._http.request(step.method, step.path, params=step.params,
                                            json=step.json, headers=step.headers)
        except httpx.TransportError as exc:
            return exc

    async def _run(self, plan: Plan[T]) -> T:
        reply: Reply = None
        try:
            while True:
                reply = await self._step(plan.send(reply))
        except StopIteration as done:
            result: T = done.value
            return result

    # messages

    async def submit(self, target_url: str, *, correlation_id: str | None = None,
                     **options: Unpack[SubmitOptions]) -> SubmitResult:
        return await self._run(self._core.submit(Submission(target_url, **options),
                                                 correlation_id))

    async def submit_batch(self, submissions: Sequence[Submission]
                           ) -> builtins.list[SubmitResult | BatchItemError]:
        return await self._run(self._core.submit_batch(submissions))

    async def get(self, message_id: str) -> Message:
        return await self._run(self._core.get(message_id))

    async def retry(self, message_id: str) -> Message:
        return await self._run(self._core.retry(message_id))

    async def cancel(self, message_id: str) -> Message:
        return await self._run(self._core.cancel(message_id))

    async def replay(self, *, destination: str | None = None,
                     since: datetime | str | None = None, until: datetime | str | None = None,
                     limit: int | None = None) -> ReplayResult:
        return await self._run(self._core.replay(destination, since, until, limit))

    async def wait_for(self, message_id: str, timeout: float = 30.0,  # noqa: ASYNC109 (as Client's)
                       statuses: Collection[MessageStatus | str] | None = None) -> Message:
        return await self._run(self._core.wait_for(message_id, timeout, statuses))

    async def list(self, status: MessageStatus | str | None = None, *,
                   page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Message]:
        cursor: str | None = None
        while True:
            page = await self._run(self._core.list_page(status, page_size, cursor))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # destinations

    async def destinations(self, state: str | None = None, *,
                           page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Destination]:
        cursor: str | None = None
        while True:
            page = await self._run(self._core.destinations_page(state, page_size, cursor))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def destination(self, name: str) -> Destination:
        return await self._run(self._core.destination(name))

    async def pause(self, name: str) -> Destination:
        return await self._run(self._core.update_destination(name, paused=True))

    async def resume(self, name: str) -> Destination:
        return await self._run(self._core.update_destination(name, paused=False))

    async def update_destination(self, name: str, *, paused: bool | None = None,
                                 max_concurrency: int | _Unset | None = UNSET,
                                 rate_per_second: float | _Unset | None = UNSET
                                 ) -> Destination:
        return await self._run(self._core.update_destination(
            name, paused=paused, max_concurrency=max_concurrency,
            rate_per_second=rate_per_second))

    # lifetime

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
