from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.aws.moto import AwsResources, create_resources, start_moto
from tests.partner import Partner

# property tests judge inputs, not speed: on a loaded 2-core machine (CI, other tests'
# servers) a slow example is no failure
settings.register_profile("suite", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


# scripts/test runs the suite on two pytest-xdist workers with --dist loadgroup. Each module
# is one group, on one worker, so that its module-scoped servers start once; the modules
# whose tests bound how long something takes (a 503 within 2 s, a record back within 20 s,
# a lease that ends in real time...) are one group together, so that no two of them run at
# once. A module that adds such a bound goes in this list.
TIMED_MODULES = frozenset({
    "tests/aws/test_lambdas_e2e.py",
    "tests/contract/test_queue_contract.py",
    "tests/e2e/test_destinations.py",
    "tests/e2e/test_hostile_clients.py",
    "tests/e2e/test_schemathesis.py",
    "tests/e2e/test_store_faults.py",
    "tests/integration/test_delivery_engine.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            module = item.path.relative_to(config.rootpath).as_posix()
            item.add_marker(pytest.mark.xdist_group("timed" if module in TIMED_MODULES
                                                    else module))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def partner() -> Iterator[Partner]:
    with Partner() as running:
        yield running


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AwsResources:
    """Fresh table, queues and bucket; boto3 pointed at moto through its own variables."""
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": "eu-west-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"
                        }.items():
        monkeypatch.setenv(name, value)
    return create_resources(moto_endpoint)
