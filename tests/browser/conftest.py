"""Browser tests: a real headless Chromium, driven by Playwright, against the whole suite.

Playwright cannot download its own browser here, so the tests use the system's Chromium
(Debian's `chromium` package; `make test` and `.ci/run` install it when missing) through
`executable_path`. `ADGANG_CHROMIUM` names another binary.

The browser tests start a suite of their own: the stories apply for the demo companies,
which the shared suite's tests use for other things. It lives as long as this package's tests
run, and not after: its idle processes would slow every test after them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from services.portal.i18n import Texts, load_texts
from services.registry import SERVICES
from services.suite import Suite
from tests.browser.steps import new_context
from tests.conftest import start_suite


def chromium_executable() -> str:
    path = os.environ.get("ADGANG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "The browser tests need Chromium: `apt-get install chromium` (make test does this when it "
            "can), or set ADGANG_CHROMIUM to a Chromium binary."
        )
    return path


@pytest.fixture(scope="module")
def playwright(portal_suite: Suite) -> Iterator[Playwright]:
    """Per module, and after the suite has started: Playwright's synchronous API keeps an
    event loop running in this thread while it is open, and the suite's start, like the
    asynchronous tests of other modules, runs one of its own."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
    yield launched
    launched.close()


CLOCK_OFFSET_FILE = "clock-offset"
# Companies of the demo's generated ones for the stories: the first is the forgotten password's
# (test_forgotten_password.py), the next two the takeover's (test_takeover.py), the fourth the
# "try again" page's (test_service_unavailable.py).
EXTRA_CUSTOMERS = 4


@pytest.fixture(scope="package")
def portal_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    var_dir = tmp_path_factory.mktemp("portal-suite")
    # Every process reads its clock's offset from this file: a story moves the suite's time
    # (a takeover's notice period) by writing it (`move_clock`).
    offset = str(var_dir / CLOCK_OFFSET_FILE)
    running = start_suite(
        var_dir,
        database_factory,
        # A story logs in more often a minute than a person would (the limit has tests of its own).
        ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE="0",
        ADGANG_IDENTITY_ACTIVATION_RATE_LIMIT_PER_MINUTE="0",
        # The takeover stories learn that onboarding knows of an activation by applying until it
        # answers 409; each application still in flight counts towards the limit per CVR (its
        # own tests are in tests/security/test_reapplication.py and tests/integration/test_takeover.py).
        ADGANG_ONBOARDING_APPLICATIONS_PER_CVR="50",
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(EXTRA_CUSTOMERS),
        **{f"ADGANG_{service.upper()}_CLOCK_OFFSET_FILE": offset for service in SERVICES},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def own_suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_factory
) -> Iterator[Suite]:
    """A suite for one module's stories alone, for a module whose story needs a demo company
    the package's suite gives to another: the module names it its `portal_suite`."""
    running = start_suite(
        tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2].removeprefix("test_") + "-suite"),
        database_factory,
        ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE="0",
        ADGANG_IDENTITY_ACTIVATION_RATE_LIMIT_PER_MINUTE="0",
    )
    yield running
    running.stop()


def move_clock(suite: Suite, seconds: float) -> None:
    """Set how far ahead of the real time every process of the suite is."""
    (suite.config.var_dir / CLOCK_OFFSET_FILE).write_text(f"{seconds}\n")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cookies, Danish like most of the portal's users."""
    opened = new_context(browser)
    yield opened
    opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture(scope="session")
def texts() -> dict[str, Texts]:
    """The portal's own words, so the tests find buttons and links as a person reads them."""
    return load_texts()
