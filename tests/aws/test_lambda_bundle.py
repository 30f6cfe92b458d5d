"""What the Lambda bundle holds, checked without building it (no network, no Python 3.13).

scripts/build-lambda installs the packages scripts/lambda-requirements prints (the `lambda`
dependency group, pinned by uv.lock) and nothing else. So: that set keeps out what only the
embedded server and the CLI need, and each handler, imported as in Lambda's init (its
runtime built) and invoked once where that needs no AWS service, runs with every other
installed package hidden, as it would from the bundle. A handler that comes to import a
package missing from the group fails here, not at its first cold start on AWS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.lambda_harness import NOT_AN_ENTRY_BATCH, api_event

ROOT = Path(__file__).resolve().parents[2]

# the embedded server's and the CLI's: never in a Lambda (httptools is not among them: the
# worker's deliveries parse their answers with it, adapters/http1.py)
BANNED = {"uvicorn", "uvloop", "watchfiles", "websockets", "httpx", "httpcore",
          "prometheus-client", "jinja2", "markupsafe"}
BANNED_MODULES = {"uvicorn", "uvloop", "watchfiles", "websockets", "httpx",
                  "httpcore", "prometheus_client", "jinja2", "markupsafe"}

ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": "bundle-test",  # in Lambda: the runtime is built at import
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing may reach AWS, should anything try
    "NOTIFY_RELAY_TABLE": "messages",
    "NOTIFY_RELAY_DESTINATIONS_TABLE": "destinations",
    "NOTIFY_RELAY_BUCKET": "bodies",
    "NOTIFY_RELAY_QUEUE_URL": "http://127.0.0.1:9/123456789012/work",
    "NOTIFY_RELAY_DEAD_LETTER_URL": "http://127.0.0.1:9/123456789012/dlq",
    "NOTIFY_RELAY_IAM_SENDERS": "arn:aws:iam::123456789012:role/orders=orders",
    "NOTIFY_RELAY_LOG_LEVEL": "CRITICAL",
    "LAMBDA_TASK_ROOT": "/var/task",
}

# In a fresh interpreter: hide every installed distribution but the bundle's, import the
# handler, invoke it once (when an event is given), print the top-level modules loaded.
PROBE = r"""
import importlib, importlib.machinery, importlib.metadata, json, os, sys, sysconfig

allowed_dists = set(json.loads(sys.argv[2]))
normal = lambda name: name.lower().replace("_", "-").replace(".", "-")
allowed = {module for module, dists in importlib.metadata.packages_distributions().items()
           if any(normal(d) in allowed_dists for d in dists)}
site = {os.path.realpath(p) for p in (sysconfig.get_paths()["purelib"],
                                      sysconfig.get_paths()["platlib"])}

class BundleOnly:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or name in allowed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, sys.path)
        places = [spec.origin] if spec is not None and spec.origin else []
        places += list(spec.submodule_search_locations or []) if spec is not None else []
        if any(os.path.realpath(p).startswith(tuple(site)) for p in places if p):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the Lambda bundle)",
                                      name=name)
        return None

sys.meta_path.insert(0, BundleOnly)

class Context:
    function_name = "bundle-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:bundle-test"
    aws_request_id = "bundle-test"
    def get_remaining_time_in_millis(self):
        return 30000

module = importlib.import_module(sys.argv[1])
event, expected_error = json.loads(sys.argv[3]), sys.argv[4]
if event is not None:
    try:
        response = module.handler(event, Context())
        assert response.get("statusCode", 200) == 200, response
    except Exception as error:
        if type(error).__name__ != expected_error:
            raise
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
sys.stdout.flush()
os._exit(0)
"""

def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def bundled() -> set[str]:
    """The distributions the bundle holds, as the build script gets them."""
    if not (ROOT / ".tools/bin/uv").exists():
        pytest.fail("no .tools/bin/uv: run scripts/bootstrap")
    listed = subprocess.run([str(ROOT / "scripts/lambda-requirements")], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    return {normal(line.split("==")[0].split(";")[0].strip())
            for line in listed.splitlines() if line.strip() and not line.startswith("#")}


def test_the_bundle_keeps_out_the_servers_packages(bundled: set[str]) -> None:
    assert not bundled & BANNED
    assert {"botocore", "aws-lambda-powertools", "mangum", "fastapi", "aiohttp",
            "pydantic", "standardwebhooks"} <= bundled


# a first invocation that needs no AWS service, and the error it ends with; any call of
# the other handlers (the reconciler's, say) reaches AWS: they are imported only
FIRST_CALLS: dict[str, tuple[dict[str, object], str]] = {
    "api": (api_event("GET", "/healthz", principal=None), ""),
    "worker": (NOT_AN_ENTRY_BATCH, "BatchProcessingError"),
}
HANDLERS = sorted(path.stem for path in (ROOT / "src/notify_relay/lambdas").glob("*.py")
                  if path.stem != "__init__")


@pytest.mark.parametrize("handler", HANDLERS)
def test_each_handler_runs_on_the_bundles_packages_alone(bundled: set[str], handler: str) -> None:
    event, error = FIRST_CALLS.get(handler, (None, ""))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(ROOT / "src"), **ENVIRONMENT}  # this tree's, not an install's
    result = subprocess.run(
        [sys.executable, "-c", PROBE, f"notify_relay.lambdas.{handler}",
         json.dumps(sorted(bundled)), json.dumps(event), error],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & BANNED_MODULES
