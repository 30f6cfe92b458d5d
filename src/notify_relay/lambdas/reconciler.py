"""Scheduled every minute: queue messages stored but never queued (the dual-write gap)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from notify_relay.bootstrap import build_aws
from notify_relay.config import AwsSettings

GRACE = timedelta(seconds=60)


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    runtime = build_aws(AwsSettings.from_env(), worker=False)
    return {"queued": asyncio.run(runtime.relay.reconcile(older_than=GRACE))}
