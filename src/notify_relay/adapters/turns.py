"""The order in which destinations get their turn at a claim, shared by the queues."""

from __future__ import annotations

from collections.abc import Iterable

from notify_relay.domain.destination import DestinationKey


class RoundRobin:
    """Least recently served first: the order in which destinations get their turn."""

    def __init__(self) -> None:
        self._served: dict[DestinationKey, int] = {}
        self._turn = 0

    def order(self, ready: list[tuple[DestinationKey, int]]) -> list[tuple[DestinationKey, int]]:
        return sorted(ready, key=lambda item: self._served.get(item[0], -1))

    def served(self, keys: Iterable[DestinationKey]) -> None:
        if len(self._served) > 100_000:  # forget the long gone; only the order matters
            self._served.clear()
        for key in keys:
            self._turn += 1
            self._served[key] = self._turn
