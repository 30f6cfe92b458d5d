"""The API Lambda: the same FastAPI app as the embedded server, behind API Gateway (IAM auth).

Everything is imported on the first invocation's path, not at import, so that the cold
start pays only for what a request needs (see docs/aws.md for the measured import times).
"""

from __future__ import annotations

import asyncio
from typing import Any

_handler: Any = None
_loop: asyncio.AbstractEventLoop | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler, _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)  # Mangum runs on the current loop: keep one for our life
    if _handler is None:
        from mangum import Mangum

        from notify_relay.api.app import create_app
        from notify_relay.bootstrap import build_aws
        from notify_relay.config import AwsSettings
        from notify_relay.logs import configure_lambda_logging

        configure_lambda_logging()
        runtime = build_aws(AwsSettings.from_env(), worker=False)
        # lifespan off: the API runtime has nothing to start, and Mangum would otherwise
        # run startup and shutdown around every invocation
        _handler = Mangum(create_app(runtime), lifespan="off")
    response: dict[str, Any] = _handler(event, context)
    return response
