"""What the entry points share: the relay, the API's helpers, and the parts to start and stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from notify_relay.auth import Authenticator
from notify_relay.domain.ratelimit import RateLimiter
from notify_relay.ports import DeadLetterSweeper
from notify_relay.service import Relay

if TYPE_CHECKING:
    from notify_relay.adapters.prometheus import PrometheusObserver
    from notify_relay.console.reads import ConsoleReads

Step = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Runtime:
    relay: Relay
    auth: Authenticator = field(default_factory=Authenticator)
    metrics: PrometheusObserver | None = None
    limiter: RateLimiter | None = None
    metrics_need_key: bool = False
    dead_letters: DeadLetterSweeper | None = None
    console: ConsoleReads | None = None  # the embedded server's console reads; none on AWS
    starts: list[Step] = field(default_factory=list)
    stops: list[Step] = field(default_factory=list)
    checks: list[Step] = field(default_factory=list)
    # called on a second stop signal, on the loop: what waits out a grace stops waiting
    hurries: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
        for step in self.starts:
            await step()

    async def stop(self) -> None:
        """Stop in the reverse order of starting; every stop step runs."""
        errors: list[BaseException] = []
        for step in reversed(self.stops):
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup("stopping the runtime failed", errors)  # type: ignore[type-var]

    async def check_ready(self) -> None:
        """Ready: the store takes a write, the queue answers, and what else was added
        (the embedded worker runs)."""
        await self.relay.store.ping()
        await self.relay.queue.ping()
        for check in self.checks:
            await check()
