"""Import time of each Lambda handler at cold start, measured with `python -X importtime`.

    .venv/bin/python bench/cold_start.py

For the API handler, what its first invocation imports is counted too (it imports lazily).
Each figure is the best of five runs, in a fresh interpreter each time. `--no-bytecode`
measures without cached bytecode (as a bundle without .pyc files starts on Lambda);
by default the caches are written by a first run and then used.
"""

from __future__ import annotations

import os
import subprocess
import sys

HANDLERS = {
    "api (module only)": "import notify_relay.lambdas.api",
    "api (module + first request)": "import notify_relay.lambdas.api, mangum, "
                                    "notify_relay.api.app, notify_relay.bootstrap, boto3",
    "worker (module only)": "import notify_relay.lambdas.worker",
    "worker (module + first batch)": "import notify_relay.lambdas.worker, boto3, "
                                     "notify_relay.adapters.aws.dynamodb, "
                                     "notify_relay.adapters.http",
    "reconciler": "import notify_relay.lambdas.reconciler, boto3",
}


def import_ms(statement: str, bytecode: bool) -> tuple[float, list[tuple[float, str]]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = "/nonexistent-notify-relay-bench"  # ignore caches
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True, env=env)
    total = 0.0
    top: list[tuple[float, str]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, raw_name = line.removeprefix("import time:").split("|")
        depth = len(raw_name) - len(raw_name.lstrip()) - 1  # one space after the bar
        ms = int(cumulative_us) / 1000
        if depth == 0:  # a top-level import of the statement
            total += ms
        if depth <= 2:
            top.append((ms, raw_name.strip()))
    return total, sorted(top, reverse=True)[:5]


def main() -> None:
    bytecode = "--no-bytecode" not in sys.argv
    print("with cached bytecode" if bytecode else "without bytecode (every module compiled)")
    for label, statement in HANDLERS.items():
        import_ms(statement, bytecode)  # writes the bytecode caches
        runs = [import_ms(statement, bytecode) for _ in range(5)]
        best, heaviest = min(runs, key=lambda r: r[0])
        names = ", ".join(f"{name} {ms:.0f}" for ms, name in heaviest)
        print(f"{label:30s} {best:7.0f} ms   heaviest: {names}")


if __name__ == "__main__":
    main()
