"""The README's quick start, run as a newcomer would paste it: shell 1's commands start the
server, shell 2's run top to bottom, on a fresh database.

Only the environment differs from a newcomer's: the server and the partner get free ports
(NOTIFY_RELAY_PORT, NOTIFY_RELAY_URL, and the partner's port written in the commands is
replaced), so that the test cannot meet another process on 8080 or 9000.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sockets import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def quickstart_block(shell: int) -> str:
    """The code block after the `<!-- quickstart: shell N -->` marker."""
    text = README.read_text()
    match = re.search(rf"<!-- quickstart: shell {shell} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README.md has no quick start block for shell {shell}"
    return match.group(1)


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    import time

    deadline = time.monotonic() + 60  # the first command installs, then starts
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server of shell 1 did not become ready: "
                         + log.read_text()[-3000:])


@pytest.fixture
def shell_1(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port, partner_port = free_port(), free_port()
    env = {**os.environ, "NOTIFY_RELAY_DB": str(tmp_path / "fresh.db"),
           "NOTIFY_RELAY_PORT": str(port), "NOTIFY_RELAY_URL": f"http://127.0.0.1:{port}",
           "PARTNER_PORT": str(partner_port)}
    for name in ("NOTIFY_RELAY_API_KEY", "NOTIFY_RELAY_SENDER", "NOTIFY_RELAY_API_KEYS"):
        env.pop(name, None)
    log = tmp_path / "shell-1.log"
    with log.open("wb") as out:
        server = subprocess.Popen(["bash", "-euo", "pipefail", "-c", quickstart_block(1)],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_ready(env["NOTIFY_RELAY_URL"], server, log)
        yield env["NOTIFY_RELAY_URL"], env
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # Ctrl-C in shell 1
        assert server.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_the_quick_start_ends_with_delivered_failed_retried_and_replayed_messages(
    shell_1: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = shell_1
    script = quickstart_block(2).replace("9000", env["PARTNER_PORT"])
    shell_2 = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    out = shell_2.stdout
    assert shell_2.returncode == 0, out + shell_2.stderr
    # the partner's lines and the commands' answers, in order
    assert "order-1: DELIVERED (attempt 1: HTTP 200)" in out
    assert "order-2: FAILED (attempt 1: HTTP 422)" in out
    assert "order-2: FAILED (attempt 2: HTTP 422)" in out
    assert "replayed 1 message" in out
    final = out[out.index("replayed 1 message"):]
    assert re.search(r"order-2\s+DELIVERED", final), final
    assert re.search(r"order-1\s+DELIVERED", final), final

    # the state the walkthrough left, as the API tells it
    order_2 = httpx.get(f"{url}/v1/messages/order-2").json()
    assert (order_2["status"], order_2["attemptCount"]) == ("DELIVERED", 3)
    assert order_2["attempts"][0]["response"]["body"] != ""
    # and the console it ends with answers
    console = httpx.get(f"{url}/console", follow_redirects=True)
    assert console.status_code == 200
    assert "notify-relay" in console.text
