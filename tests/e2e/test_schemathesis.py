"""schemathesis against the real server: generated requests from /openapi.json, every check.

Positive data must be accepted and answered as documented; negative data must never be a
5xx or an undocumented answer. The list endpoints' `cursor` is opaque by contract (only a
cursor this server issued is valid), so generated cursors are rightly refused there: those
two operations run every check but the acceptance of positive data. The hooks module
keeps generated `deliverAt` times within the server's cap and points generated target and
callback URLs at loopback (see it for why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api_client import ServerProcess

SEED = "20261129"
ROOT = Path(__file__).resolve().parents[2]
LISTS = ("list_messages_v1_messages_get", "list_destinations_v1_destinations_get")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its targets are on loopback (the hooks point every generated URL at localhost:9, where
    nothing listens): generated host names made it ask the machine's DNS resolver, and a
    clean stop waited out those lookups (~20 s). After all the hostile input, it must still
    stop cleanly, and at once."""
    db = tmp_path_factory.mktemp("schemathesis") / "relay.db"
    running = ServerProcess(db, "--log-level", "WARNING",
                            "--allow-networks", "127.0.0.0/8").start()
    try:
        yield running
    finally:
        started = time.monotonic()
        assert running.terminate(timeout=15) == 0, running.logs()[-3000:]
        assert time.monotonic() - started < 5, "the clean stop waited on something"


def schemathesis(server: ServerProcess, cwd: Path, *options: str,
                 env: dict[str, str] | None = None) -> None:
    # no example database: each run starts in a new directory, so it is never read back,
    # and keeping it (hypothesis's Pareto front of every example) took a third of the runs'
    # time: the negative run 85 -> 62 s, the first positive one 45 -> 31 s, as many cases
    result = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "run", f"{server.base_url}/openapi.json",
         "--seed", SEED, "--no-color", "--generation-database", "none", *options],
        capture_output=True, text=True, timeout=400, check=False, cwd=cwd,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
             "PYTHONPATH": str(ROOT), **(env or {})})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_positive_data_is_accepted_and_answered_as_documented(
    server: ServerProcess, tmp_path: Path
) -> None:
    capped = {"URL_MAX_LENGTH": "256"}  # why: the hooks module
    schemathesis(server, tmp_path, "--mode", "positive", "--checks", "all",
                 "--max-examples", "100",
                 *(f"--exclude-operation-id={op}" for op in LISTS), env=capped)
    schemathesis(server, tmp_path, "--mode", "positive", "--checks", "all",
                 "--exclude-checks", "positive_data_acceptance", "--max-examples", "100",
                 *(f"--include-operation-id={op}" for op in LISTS), env=capped)


def test_negative_data_is_never_a_5xx_or_undocumented(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    schemathesis(server, tmp_path, "--mode", "negative", "--max-examples", "100", "--checks",
                 "not_a_server_error,status_code_conformance,content_type_conformance,"
                 "response_schema_conformance,response_headers_conformance")
