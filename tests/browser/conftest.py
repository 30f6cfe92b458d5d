"""Browser tests of the console: the machine's Chromium driven by Playwright, over a real
server process and real partners on 127.0.0.1.

Playwright's own browser download is not used: the tests need a `chromium` on PATH
(scripts/install-chromium installs Debian's). Without one they fail, saying so: a skipped
browser suite would pass in CI having tested nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.browser.hostile import HostilePartner
from tests.e2e.api_client import Api, ServerProcess
from tests.partner import Partner

KEY = "console-key-0123456789"
SENDER = "shop"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium against a real server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on PATH: the browser tests drive the machine's Chromium "
                    "(Playwright's download is not used); run scripts/install-chromium",
                    pytrace=False)
    return path


# Module scope, not session: Playwright's sync API keeps an event loop running on this
# thread while it is started, and every async test after it (anyio) would fail to start its
# own. A module's fixtures are torn down before the next module's tests.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def site_partner() -> Iterator[Partner]:
    with Partner() as running:
        yield running


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostilePartner]:
    with HostilePartner() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("console") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8",
                       "--api-keys", f"{KEY}={SENDER}") as running:
        yield running


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    with Api(server.base_url, key=KEY) as client:
        yield client


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); fails the test on a script error or a
    Content-Security-Policy violation in the page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # a refused request (401, 409) is logged by Chromium as an error: that is the API
        # answering, and each test asserts on what the page shows of it
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    yield tab
    context.close()
    assert errors == [], errors
