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
