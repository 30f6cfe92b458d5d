"""Import time of each Lambda handler at cold start, measured with `python -X importtime`.

    .venv/bin/python bench/cold_start.py

For the API handler, what its first invocation imports is counted too (it imports lazily).
Each figure is the best of five runs, in a fresh interpreter each time.
"""

from __future__ import annotations

import subprocess
import sys

HANDLERS = {
    "api (module only)": "import notify_relay.lambdas.api",
    "api (module + first request)": "import notify_relay.lambdas.api, mangum, "
                                    "notify_relay.api.app, notify_relay.bootstrap, boto3",
    "worker": "import notify_relay.lambdas.worker",
    "reconciler": "import notify_relay.lambdas.reconciler, boto3",
}


def import_ms(statement: str) -> tuple[float, list[tuple[float, str]]]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True)
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
    for label, statement in HANDLERS.items():
        runs = [import_ms(statement) for _ in range(5)]
        best, heaviest = min(runs, key=lambda r: r[0])
        names = ", ".join(f"{name} {ms:.0f}" for ms, name in heaviest)
        print(f"{label:30s} {best:7.0f} ms   heaviest: {names}")


if __name__ == "__main__":
    main()
