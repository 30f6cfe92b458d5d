"""The worker's alarm: made before the Relay, the Gate and the Worker, and given to each,
so that the composition root wires them without patching callbacks onto built objects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

_NEVER = datetime.max.replace(tzinfo=UTC)


class WakeUp:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._sleep_until = _NEVER

    def scheduled(self, due_at: datetime) -> None:
        """An entry was queued or rescheduled: wake the worker if it is due before the
        worker's planned wake-up, so that nothing waits for the idle poll."""
        if due_at <= self._sleep_until:
            self._event.set()

    def ready(self) -> None:
        """A destination may take more (a slot freed, a breaker closed, a setting changed),
        or the worker is stopping."""
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken early."""
        if seconds <= 0:
            return False
        self._sleep_until = datetime.now(UTC) + timedelta(seconds=seconds)
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        finally:
            self._sleep_until = _NEVER
        return True
