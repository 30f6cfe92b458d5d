"""`serve` freezes what exists once its runtime has started, so that full collections stop
walking it (56 -> 4 ms a collection measured); an embedding host keeps its own GC state."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from notify_relay.api.app import create_app
from notify_relay.bootstrap import build_embedded
from notify_relay.config import load

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_app_freezes_only_when_asked(tmp_path: Path, freeze: bool) -> None:
    gc.unfreeze()
    runtime = build_embedded(load({"db": str(tmp_path / "r.db")}, environ={}))
    app = create_app(runtime, freeze_at_start=freeze)
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert (frozen > 10_000) is freeze, frozen
