"""Lambda entry points; each stays thin.

In a Lambda execution environment each handler module builds its runtime as it is imported,
in the function's init phase: the objects that cost time to make (the FastAPI app, the AWS
clients, the Relay) exist before the first invocation, where SnapStart snapshots them
(prod's API function; docs/aws.md, Cold start). What holds a connection, an event loop or
a random state (aiohttp's session, the signing secrets read from Secrets Manager, the
`random` seed) is made by the first invocation instead, since a snapshot restores
connections dead and would give every restored environment the same random numbers.
Elsewhere (tests, tools) importing a handler builds nothing: it builds on its first call,
from the environment as it is then.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Number
from typing import cast

from aws_lambda_powertools import Tracer


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


# What the Tracer patches: the only traced library the bundle holds; Powertools' default
# would try every module the X-Ray SDK knows (and import each that is installed).
TRACED_MODULES = ("botocore",)


def make_tracer(service: str) -> Tracer:
    """X-Ray traces from every Lambda: Powertools Tracer over the function's active tracing.

    Each invocation gets a `## handler` subsegment (cold start and service annotated by
    Powertools, plus what the handler adds), and every AWS call a subsegment of its own:
    botocore is patched as the Tracer is made, at import, in the init phase. The calls run
    in threads (asyncio.to_thread); the X-Ray SDK's Lambda context gives each thread the
    invocation's trace from `_X_AMZN_TRACE_ID`, so they land in the right trace.

    Handlers never record responses (`capture_response=False`): they hold message bodies
    and partners' answers, and a segment document has a 64 KiB limit. Partner requests are
    not subsegments of their own: a worker makes up to 100 at once on one thread, where the
    SDK's entity stack (one per thread) would nest concurrent subsegments wrongly; each
    attempt's duration is in the AttemptDuration metric and in the logs, which carry the
    trace id. Outside Lambda (tests, tools) Powertools disables the Tracer and patches
    nothing."""
    return Tracer(service=service, patch_modules=TRACED_MODULES)


def annotate(tracer: Tracer, key: str, count: int) -> None:
    """An indexed (searchable) count on the invocation's subsegment. (The Tracer's hint says
    numbers.Number, which mypy does not take an int for.)"""
    tracer.put_annotation(key, cast(Number, count))
