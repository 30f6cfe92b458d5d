from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.partner import Partner


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def partner() -> Iterator[Partner]:
    with Partner() as running:
        yield running
