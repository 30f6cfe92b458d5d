"""Cold start of each Lambda handler, loaded the way Lambda loads the bundle.

    scripts/build-lambda --platform host         # build/lambda-host/: this machine's wheels
    .venv/bin/python bench/cold_start.py [--runs 9]

Each run is a fresh Python 3.13 process (the Lambda runtime's version) that sees the bundle
and the standard library only (`-S`, PYTHONPATH=<bundle>), with a function's environment
(so the handler builds its runtime as it is imported, as in Lambda's init phase) and
PYTHONDONTWRITEBYTECODE=1: bytecode comes from the bundle's unchecked-hash .pyc files or
from compiling, never from a cache a run before wrote, as on Lambda's read-only /var/task.
Before the clock starts, the process imports what Lambda's runtime client has imported when
it imports the handler (awslambdaric's bootstrap: json, logging, traceback, decimal,
concurrent.futures...). Measured inside the process: the handler module's import, then its
first invocation where one needs no AWS service (the API: GET /healthz through Mangum and
the app; the worker: a batch of one record that is not a queue entry, which starts its
runtime and fails before any call); not the interpreter's own start, which Lambda's
runtime pays before it. Each figure is the best of `--runs` (wall clock; the CPU time of
that run beside it); "no .pyc" runs a copy of the bundle without its bytecode (the bundle
as it was built before), for the ratio. A cold start over the 400 ms target is flagged.
"heaviest" lists the largest imports of one more run (`-X importtime`, cumulative, which
that flag inflates).

The figures are this machine's: Lambda's arm64 CPUs differ, so read the ratios more than
the milliseconds. Each handler waits for the machine to be quiet first (bench/machine.py).
Needs a Python 3.13: NOTIFY_RELAY_PYTHON313, python3.13 on PATH, pyenv's or uv's (as
scripts/build-lambda looks for it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from machine import cpu_mark, foreign_cores, wait_quiet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.aws.lambda_harness: the first invocations' events
from tests.aws.lambda_harness import NOT_AN_ENTRY_BATCH, api_event  # noqa: E402

TARGET_MS = 400.0

# a function's environment: placeholders, since nothing below calls AWS
ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": "cold-start-bench",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "NOTIFY_RELAY_TABLE": "messages",
    "NOTIFY_RELAY_DESTINATIONS_TABLE": "destinations",
    "NOTIFY_RELAY_BUCKET": "bodies",
    "NOTIFY_RELAY_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/work",
    "NOTIFY_RELAY_DEAD_LETTER_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq",
    "NOTIFY_RELAY_IAM_SENDERS": "arn:aws:iam::123456789012:role/orders=orders",
    "NOTIFY_RELAY_LOG_LEVEL": "WARNING",
    # the invocation's trace, sampled (the Tracer's costlier path); its segments go by UDP
    # to the X-Ray daemon's default address on 127.0.0.1, where nothing listens here
    "_X_AMZN_TRACE_ID": "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;"
                        "Sampled=1",
}


# (module, the first invocation's event or None where any invocation calls AWS, the name
# of the error that invocation ends with, if any); the bundle's other handlers are imported
# only
HANDLERS: dict[str, tuple[str, dict[str, object] | None, str]] = {
    "api": ("notify_relay.lambdas.api", api_event("GET", "/healthz", principal=None), ""),
    "worker": ("notify_relay.lambdas.worker", NOT_AN_ENTRY_BATCH, "BatchProcessingError"),
    "reconciler": ("notify_relay.lambdas.reconciler", None, ""),
}

# runs in the measured process; prints {"import": ms, "first": ms, "cpu": ms}
PROBE = """
# what awslambdaric (bootstrap, runtime client, marshaller, log utils) has imported
import concurrent.futures, datetime, decimal, enum, importlib, json, logging, math, os
import sys, time, traceback
class Context:
    function_name = "cold-start-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:cold-start-bench"
    aws_request_id = "bench"
    def get_remaining_time_in_millis(self): return 30000
module_name, event, expected = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
cpu, start = time.process_time(), time.perf_counter()
module = importlib.import_module(module_name)
imported = time.perf_counter()
if event is not None:
    try:
        response = module.handler(event, Context())
        assert response.get("statusCode", 200) == 200, response
    except Exception as error:
        if type(error).__name__ != expected:
            raise
done = time.perf_counter()
print(json.dumps({"import": (imported - start) * 1000, "first": (done - imported) * 1000,
                  "cpu": (time.process_time() - cpu) * 1000}))
sys.stdout.flush()
os._exit(0)  # no teardown: an open aiohttp session would only add noise
"""


@dataclass(frozen=True)
class Figures:
    import_ms: float
    first_ms: float
    cpu_ms: float
    heaviest: list[tuple[float, str]]

    @property
    def total_ms(self) -> float:
        return self.import_ms + self.first_ms


def find_python313() -> str:
    explicit = os.environ.get("NOTIFY_RELAY_PYTHON313")
    candidates = [explicit] if explicit else [
        shutil.which("python3.13"),
        *sorted(glob.glob(os.path.expanduser(
            os.environ.get("PYENV_ROOT", "~/.pyenv") + "/versions/3.13*/bin/python3.13"))),
    ]
    uv = ROOT / ".tools/bin/uv"
    if not explicit and uv.exists():
        found = subprocess.run([str(uv), "python", "find", "--no-python-downloads", "3.13"],
                               capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip() or None)
    for candidate in candidates:
        if candidate and subprocess.run(
                [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 13))"],
                capture_output=True, check=False).returncode == 0:
            return candidate
    sys.exit("cold_start: no Python 3.13 found (the Lambda runtime's version): install one "
             "(pyenv install 3.13, or .tools/bin/uv python install 3.13) or set "
             "NOTIFY_RELAY_PYTHON313 to its interpreter")


def check_bundle(bundle: Path) -> None:
    pyc = bundle / "notify_relay/lambdas/__pycache__/api.cpython-313.pyc"
    if not (bundle / "notify_relay").is_dir():
        sys.exit(f"cold_start: no bundle at {bundle}: run scripts/build-lambda --platform host")
    if not pyc.exists():
        sys.exit(f"cold_start: {bundle} has no Python 3.13 bytecode: rebuild it with "
                 "scripts/build-lambda --platform host")
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    if flags != 0b01:  # hash-based, source not checked (PEP 552)
        sys.exit(f"cold_start: {pyc} is not unchecked-hash bytecode (flags {flags})")


def without_bytecode(bundle: Path, into: Path) -> Path:
    """A copy of the bundle (hard links) less its __pycache__ folders."""
    copy = into / "bundle"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("__pycache__"),
                    copy_function=os.link)
    return copy


def run_once(python: str, bundle: Path, module: str, event: dict[str, object] | None,
             expected: str, importtime: bool = False) -> tuple[dict[str, float], str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(bundle),
           "PYTHONDONTWRITEBYTECODE": "1", "LAMBDA_TASK_ROOT": str(bundle), **ENVIRONMENT}
    flags = ["-X", "importtime"] if importtime else []
    result = subprocess.run([python, "-S", *flags, "-c", PROBE, module, json.dumps(event),
                             expected],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"cold_start: {module} failed from {bundle}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def heaviest(stderr: str) -> list[tuple[float, str]]:
    """The packages whose imports weigh most: for each, its largest cumulative import time
    (a lower bound: its modules imported from elsewhere are not added up)."""
    largest: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, raw_name = line.removeprefix("import time:").split("|")
        package = raw_name.strip().split(".")[0]
        if package != "notify_relay":
            largest[package] = max(largest.get(package, 0.0), int(cumulative_us) / 1000)
    return sorted(((ms, name) for name, ms in largest.items()), reverse=True)[:4]


def measure(python: str, bundle: Path, module: str, event: dict[str, object] | None,
            expected: str, runs: int) -> Figures:
    results = [run_once(python, bundle, module, event, expected)[0] for _ in range(runs)]
    best = min(results, key=lambda r: r["import"] + r["first"])
    _, stderr = run_once(python, bundle, module, event, expected, importtime=True)
    return Figures(best["import"], best["first"], best["cpu"], heaviest(stderr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "build/lambda-host",
                        help="a bundle built for this machine (default: build/lambda-host)")
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per figure")
    parser.add_argument("--quiet-below", type=float, default=0.3,
                        help="wait until other processes use fewer cores than this (0: no wait)")
    parser.add_argument("--quiet-timeout", type=float, default=120.0)
    args = parser.parse_args()
    python = find_python313()
    bundle = args.bundle.resolve()
    check_bundle(bundle)
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"Python {version} ({python}), bundle {bundle}, best of {args.runs}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'handler':11s} {'import':>7s} {'1st call':>8s} {'total':>6s} {'(cpu)':>7s} "
          f"{'no .pyc':>7s} {'ratio':>5s}  heaviest imports (ms, with .pyc)")
    over = []
    handlers = dict(HANDLERS)
    for path in sorted((bundle / "notify_relay/lambdas").glob("*.py")):  # any other: import
        if path.stem != "__init__":
            handlers.setdefault(path.stem, (f"notify_relay.lambdas.{path.stem}", None, ""))
    with tempfile.TemporaryDirectory() as scratch:
        plain = without_bytecode(bundle, Path(scratch))
        for label, (module, event, expected) in handlers.items():
            wait_quiet(args.quiet_below, args.quiet_timeout, label)
            mark = cpu_mark()
            new = measure(python, bundle, module, event, expected, args.runs)
            old = measure(python, plain, module, event, expected, args.runs)
            others = foreign_cores(mark, cpu_mark())
            names = ", ".join(f"{name} {ms:.0f}" for ms, name in new.heaviest)
            flag = "  OVER 400 ms" if new.total_ms > TARGET_MS else ""
            first = f"{new.first_ms:5.0f} ms" if event is not None else f"{'-':>8s}"
            ratio = old.total_ms / new.total_ms
            print(f"{label:11s} {new.import_ms:4.0f} ms {first} {new.total_ms:3.0f} ms "
                  f"({new.cpu_ms:3.0f} ms) {old.total_ms:4.0f} ms {ratio:4.1f}x"
                  f"  {names}{flag}  [other processes: {others:.2f} cores]")
            if flag:
                over.append(label)
    if over:
        print(f"over the {TARGET_MS:.0f} ms target: {', '.join(over)}")
        sys.exit(1)
    print(f"every handler under {TARGET_MS:.0f} ms")


if __name__ == "__main__":
    main()
