"""SIGKILL the server while deliveries are in flight; a restart on the same file loses nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.e2e.api_client import Api, ServerProcess, submit_until_killed
from tests.partner import Partner

MESSAGES = 300
# three destinations, so the crash also cuts short attempts held by per-destination caps
DESTINATIONS = ("alpha", "beta", None)


def submission(mid: str, url: str) -> dict[str, object]:
    body: dict[str, object] = {"messageId": mid, "targetUrl": url, "body": {"id": mid}}
    destination = DESTINATIONS[int(mid.rsplit("-", 1)[1]) % len(DESTINATIONS)]
    if destination is not None:
        body["destination"] = destination
    return body


def test_sigkill_mid_delivery_then_restart_delivers_everything(
    tmp_path: Path, partner: Partner
) -> None:
    db = tmp_path / "crash.db"
    # one process: test_processes.py kills each process of a two-process server
    flags = ("--processes", "1", "--allow-networks", "127.0.0.0/8", "--concurrency", "16",
             "--destination-concurrency", "6")
    ids = [f"crash-{i:04d}" for i in range(MESSAGES)]
    first = ServerProcess(db, *flags, log=tmp_path / "first.log").start()
    api = Api(first.base_url)

    accepted = submit_until_killed(
        api, ids, lambda mid: submission(mid, partner.url(f"/slow/0.05?{mid}")), partner,
        first.kill)
    api.close()
    delivered_before = len(partner.received("/slow"))
    assert 0 < delivered_before < MESSAGES

    second = ServerProcess(db, *flags, log=tmp_path / "second.log").start()
    api = Api(second.base_url)
    try:
        # a sender retries what it had no answer for; the rest must carry on by itself
        for mid in ids:
            if mid not in accepted:
                assert api.submit(submission(mid, partner.url(f"/slow/0.05?{mid}"))
                                  ).status_code in (200, 202)
        api.wait_all_delivered(ids)
        # no slot is left taken by an attempt the kill cut short
        listed = api.destinations().json()["items"]
        assert {d["destination"] for d in listed} == {"alpha", "beta",
                                                      f"127.0.0.1:{partner.port}"}
        assert all(d["inFlight"] == 0 and d["pending"] == 0 for d in listed), listed
    finally:
        api.close()
        second.terminate()

    counts = Counter(r.header("Idempotency-Key") for r in partner.received("/slow"))
    duplicates = {key: n for key, n in counts.items() if n > 1}
    print(f"\ncrash test: {len(accepted)} of {MESSAGES} acknowledged before SIGKILL, "
          f"{delivered_before} partner requests before it, "
          f"{sum(counts.values())} in all, {len(duplicates)} messages sent twice or more")
    assert set(counts) == {f"default:{mid}" for mid in ids}
    # at-least-once: only attempts cut short by the kill may repeat
    assert len(duplicates) <= 16
    # no destination ever had more than its cap in flight (plus what the kill cut short)
    assert partner.max_in_progress["slow"] <= 16
