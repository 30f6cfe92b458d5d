"""Lambda entry points; each stays thin.

In a Lambda execution environment each handler module builds its runtime as it is imported,
in the function's init phase: the objects that cost time to make (the FastAPI app, the AWS
clients, the Relay) exist before the first invocation, where SnapStart could snapshot them
(not enabled: docs/aws.md, Cold start). What holds a connection or an event loop
(aiohttp's session, the signing secrets read from Secrets Manager) is made by the first
invocation instead, since a snapshot restores connections dead. Elsewhere (tests, tools)
importing a handler builds nothing: it builds on its first call, from the environment as
it is then.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor


def in_lambda() -> bool:
    """True in a Lambda execution environment, which sets this variable for every function
    (in the init phase too)."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


# AWS calls in flight at once from one environment: a worker batch of 100 records, or a
# batch submission of 100, makes its calls through threads (asyncio.to_thread) and
# botocore's connection pool; asyncio's default pool (CPUs + 4 threads) and botocore's (10
# connections) would queue them.
AWS_CALLS_IN_FLIGHT = 64


def new_loop() -> asyncio.AbstractEventLoop:
    """The event loop a handler keeps for its environment's life, with a thread pool sized
    for AWS_CALLS_IN_FLIGHT blocking calls."""
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=AWS_CALLS_IN_FLIGHT,
                                                 thread_name_prefix="aws"))
    return loop
