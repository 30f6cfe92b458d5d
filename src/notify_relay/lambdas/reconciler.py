"""Scheduled every minute: queue messages stored but never queued (the dual-write gap)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

from notify_relay.bootstrap import build_aws
from notify_relay.config import AwsSettings


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Messages younger than the grace may still be in their API Lambda's hands."""
    grace = timedelta(seconds=float(os.environ.get("NOTIFY_RELAY_RECONCILE_GRACE", "60")))
    runtime = build_aws(AwsSettings.from_env(), worker=False)
    return {"queued": asyncio.run(runtime.relay.reconcile(older_than=grace))}
