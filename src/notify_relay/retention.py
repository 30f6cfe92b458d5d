"""Retention (contract v1.1, `--retention`): final messages older than the window go.

Deleted in small batches, each its own short transaction with a pause between, so that a
backlog of expired messages (a first start after months) never holds submissions or
attempts behind one long write. Waiting messages are never touched, whatever their age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from notify_relay.clock import utcnow
from notify_relay.ports import MessageStore

log = logging.getLogger("notify_relay.retention")
BATCH = 500
PAUSE_SECONDS = 0.05  # between batches: the writers' turn
LONGEST_INTERVAL_SECONDS = 60.0


class RetentionSweeper:
    def __init__(self, store: MessageStore, keep: timedelta, *,
                 clock: Callable[[], datetime] = utcnow, batch: int = BATCH,
                 release_space: Callable[[], Awaitable[int]] | None = None) -> None:
        """`release_space`: gives freed space back to the disk after a sweep (SQLite's
        incremental vacuum); a store that frees space by itself has none."""
        self._store = store
        self._release_space = release_space
        self._keep = keep
        self._clock = clock
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        # a short window is swept often enough to hold to it (tests, small disks)
        self.interval = max(1.0, min(LONGEST_INTERVAL_SECONDS, keep.total_seconds() / 4))

    async def sweep(self) -> int:
        """Delete every message past the window now; returns how many."""
        before = self._clock() - self._keep
        deleted = 0
        while True:
            count = await self._store.expire(before, self._batch)
            deleted += count
            if count == 0:  # not `< batch`: a store may cut a batch short (see expire())
                break
            await asyncio.sleep(PAUSE_SECONDS)
        if deleted:
            released = await self._release_space() if self._release_space else 0
            log.info("expired final messages past the retention window",
                     extra={"deleted": deleted, "changedBefore": before.isoformat(),
                            "pagesReleased": released})
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a failed sweep is tried again at the next turn
                log.exception("deleting expired messages failed")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
