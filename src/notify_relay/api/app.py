"""The application factory: one FastAPI app over a Runtime, for every entry point."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.datastructures import Headers

from notify_relay import __version__
from notify_relay.api import problems
from notify_relay.api.batch import router as batch_router
from notify_relay.api.destinations import router as destinations_router
from notify_relay.api.fast_submit import FastSubmit
from notify_relay.api.middleware import (
    BodyGuardMiddleware,
    CorrelationIdMiddleware,
    HeadAsGetMiddleware,
    KeylessGuard,
    KeylessGuardMiddleware,
    RejectedSubmissionsMiddleware,
)
from notify_relay.api.openapi import DescribedApp, serve_docs
from notify_relay.api.plain_submit import PlainSubmissions
from notify_relay.api.routes import router
from notify_relay.console import mount_console
from notify_relay.runtime import Runtime

if TYPE_CHECKING:
    from notify_relay.embedded.owner import OwnerLink


YOUNG_GC_THRESHOLD = 10_000
SWITCH_INTERVAL_SECONDS = 0.0005


def create_app(rt: Runtime, listen_host: str = "127.0.0.1", *,
               freeze_at_start: bool = False, owner: OwnerLink | None = None) -> DescribedApp:
    """`listen_host`: where the server listens, one more Host a key-less server answers.
    `freeze_at_start`: for the process that runs only this app (`serve`), see lifespan.
    `owner`: the API process of a two-process `serve` forwards the owner's routes there."""
    @asynccontextmanager
    async def lifespan(_: DescribedApp) -> AsyncIterator[None]:
        await rt.start()
        # what exists now (the app, its models, the runtime: some 80,000 objects) lives as
        # long as the process: frozen, a full collection no longer walks it (49 ms here,
        # paid by whichever request triggered it, every few hundred requests)
        if freeze_at_start:
            gc.collect()
            gc.freeze()
            # a young collection every 700 container objects net (the default) ran 130-210
            # times a second in each process under load, 2.2-2.5 % of its time: one claim of
            # 64 messages alone holds more than that for a moment. At 10,000 none ran in
            # steady state; what a request makes is freed by its reference counts anyway
            older, oldest = gc.get_threshold()[1:]
            gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)
            # the COMMIT and write-turn threads hand the SQLite writer between the two
            # processes; each waited for the loop's GIL up to 5 ms (0.7-1.5 ms a hand-over
            # measured), while neither process could write
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        try:
            yield
        finally:
            await rt.stop()

    app = DescribedApp(
        title="notify-relay",
        version=__version__,
        description="Reliable delivery of HTTP notifications to external partners.",
        lifespan=lifespan,
        docs_url=None,  # serve_docs: from local assets
        # /v1/messages/ is an unknown route: a 404 problem (the contract), not a 307 to
        # another path that a client's POST may not follow
        redirect_slashes=False,
        redoc_url=None,
        # no OpenTelemetry here: its per-request checks cost more than our own handler
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.runtime = rt
    problems.install(app)
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(destinations_router)
    serve_docs(app)
    mount_console(app, rt)
    app.add_middleware(FastSubmit, rt=rt)  # added first: innermost
    auth = rt.auth
    app.add_middleware(BodyGuardMiddleware, authenticate=(
        (lambda scope: auth.sender_of(scope, Headers(scope=scope).get("authorization"), None))
        if auth.enabled else None))
    app.add_middleware(RejectedSubmissionsMiddleware,  # Prometheus embedded, EMF on AWS
                       observer=rt.relay.observer)
    guard = None if rt.auth.enabled else KeylessGuard(listen_host)
    if guard is not None:
        app.add_middleware(KeylessGuardMiddleware, guard=guard)
    if owner is not None:
        from notify_relay.embedded.owner import ForwardToOwner

        assert rt.metrics is not None
        app.add_middleware(ForwardToOwner, owner=owner,
                           own_metrics=rt.metrics.render_submissions)
    app.add_middleware(HeadAsGetMiddleware)  # every layer below sees GET
    app.add_middleware(CorrelationIdMiddleware)  # added last: outermost
    # uvicorn's protocol hands it submissions before all of the above (plain_submit.py)
    app.state.plain_submissions = PlainSubmissions(rt, guard)
    return app
