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

import os


def in_lambda() -> bool:
    """True in a Lambda execution environment, which sets this variable for every function
    (in the init phase too)."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ
