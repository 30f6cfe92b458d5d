"""Store faults on the real server: another process holds the write lock, the disk is
full, the file is damaged. A fault is a fast 503 with Retry-After, never a frozen server,
and nothing answered 202 is lost; the server recovers by itself."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import problem
from tests.partner import Partner


def test_a_held_write_lock_is_a_fast_503_then_the_server_recovers(
    tmp_path: Path, partner: Partner
) -> None:
    db = tmp_path / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.1/32") as server:
        api = Api(server.base_url)
        assert api.http.get("/readyz").status_code == 200
        accepted = []
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        holder.execute("BEGIN IMMEDIATE")  # an operator's shell, say, mid-transaction
        try:
            began = time.monotonic()
            refused = api.submit({"messageId": "during", "targetUrl": partner.url("/ok")})
            took = time.monotonic() - began
            body = problem(refused, 503, "SYSTEM_ERROR")
            assert refused.headers["retry-after"] == "1"
            assert "retry" in body["detail"] or "cannot" in body["detail"]
            assert took < 3.0  # the short busy timeout, not ten seconds of a frozen loop
            cid = refused.headers["x-correlation-id"]
            lines = [json.loads(line) for line in server.logs().splitlines() if cid in line]
            assert [(line["message"], line["level"], line.get("status")) for line in lines] == [
                ("request refused", "WARNING", 503)], lines  # once, with its cause
            assert lines[0]["detail"] == body["detail"]
            started = time.monotonic()
            assert api.http.get("/healthz").status_code == 200
            assert time.monotonic() - started < 2.0
            problem(api.http.get("/readyz"), 503, "SYSTEM_ERROR")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for i in range(10):
            mid = f"after-{uuid.uuid4().hex[:6]}-{i}"
            assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok")}
                              ).status_code == 202
            accepted.append(mid)
        # the sender retries what got a 503: retrying with the same messageId is safe
        assert api.submit({"messageId": "during", "targetUrl": partner.url("/ok")}
                          ).status_code == 202
        for mid in [*accepted, "during"]:
            api.wait_for(mid, {"DELIVERED"})
        assert api.http.get("/readyz").status_code == 200
        api.close()


def test_a_damaged_database_is_refused_at_start(tmp_path: Path, partner: Partner) -> None:
    db = tmp_path / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.1/32") as server:
        api = Api(server.base_url)
        for i in range(200):
            assert api.submit({"messageId": f"m-{i}", "targetUrl": partner.url("/ok"),
                               "body": "x" * 500}).status_code == 202
        api.close()
    with db.open("r+b") as damaged:  # a torn write in the middle of the file
        damaged.seek(4096 * 3)
        damaged.write(b"\xde\xad\xbe\xef" * 1024)
    result = subprocess.run([sys.executable, "-m", "notify_relay.cli", "serve", "--db", str(db)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "quick_check" in result.stderr
    assert "Traceback" not in result.stderr


def mount(path: Path, options: str) -> bool:
    path.mkdir(exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, timeout=30)


def test_disk_full_under_load_loses_nothing_and_recovers(
    tmp_path: Path, partner: Partner
) -> None:
    disk = tmp_path / "disk"
    if not mount(disk, "size=3m"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        db = disk / "relay.db"
        accepted: list[str] = []
        with ServerProcess(db, "--allow-networks", "127.0.0.1/32",
                           log=tmp_path / "server.log") as server, Api(server.base_url) as api:
            api.patch_destination(f"127.0.0.1:{partner.port}", {"paused": True})

            def submit_until_refused(prefix: str, limit: int) -> int:
                for i in range(limit):
                    mid = f"{prefix}-{i}"
                    response = api.submit({"messageId": mid, "targetUrl": partner.url("/ok"),
                                           "body": "x" * 20_000})
                    if response.status_code == 503:
                        problem(response, 503, "SYSTEM_ERROR")
                        return i
                    assert response.status_code == 202, response.text
                    accepted.append(mid)
                return limit

            refused_at = submit_until_refused("fill", 400)
            assert refused_at < 400, "the small disk never filled"
            assert api.http.get("/healthz").status_code == 200
            problem(api.http.get("/readyz"), 503, "SYSTEM_ERROR")

            remount(disk, "size=64m")  # space returns: it recovers by itself
            api.wait_until(lambda: api.http.get("/readyz").status_code == 200, "ready again")
            assert submit_until_refused("more", 20) == 20

            api.patch_destination(f"127.0.0.1:{partner.port}", {"paused": False})
            for mid in accepted:
                api.wait_for(mid, {"DELIVERED"}, timeout=30)
        assert len(partner.received("/ok")) >= len(accepted)
    finally:
        subprocess.run(["umount", "-l", str(disk)], timeout=30, check=False)


def chattr(flag: str, *paths: Path) -> bool:
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True,
                            timeout=30, check=False)
    return result.returncode == 0


def test_database_read_only_under_load_loses_nothing_and_recovers(
    tmp_path: Path, partner: Partner
) -> None:
    """The files turn immutable (as a file system remounted read-only would): writes fail
    even through the server's open descriptors."""
    db = tmp_path / "relay.db"
    files = (db, Path(f"{db}-wal"))
    accepted: list[str] = []
    with ServerProcess(db, "--allow-networks", "127.0.0.1/32") as server, \
            Api(server.base_url) as api:
        for i in range(20):
            mid = f"before-{i}"
            assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok")}
                              ).status_code == 202
            accepted.append(mid)
        if not chattr("+i", *files):
            pytest.skip("chattr +i is not supported here (needs root on ext4 or the like)")
        try:
            refused = [api.submit({"messageId": f"during-{i}", "targetUrl": partner.url("/ok")})
                       for i in range(5)]
            assert {r.status_code for r in refused} == {503}
            problem(refused[0], 503, "SYSTEM_ERROR")
            assert api.http.get("/healthz").status_code == 200
            problem(api.http.get("/readyz"), 503, "SYSTEM_ERROR")
        finally:
            chattr("-i", *files)
        api.wait_until(lambda: api.http.get("/readyz").status_code == 200, "writable again")
        for i in range(5):  # the senders retry what got a 503, with the same ids
            mid = f"during-{i}"
            assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok")}
                              ).status_code == 202
            accepted.append(mid)
        for mid in accepted:
            api.wait_for(mid, {"DELIVERED"}, timeout=30)
