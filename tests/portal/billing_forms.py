"""What the tests of the order and master data pages share: several browsers of one portal
(users acting at the same time), a logged-in user with chosen grants and functions, and the
fields of one form of a page, as a browser would post them."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.identity.models import User
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.portal.conftest import log_in_through_portal
from tests.security.world import Accounts, add_user
from tests.support.asgi import AppTransport

FORM = re.compile(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', re.S)
INPUT = re.compile(r"<input\b([^>]*)>")
ATTRIBUTE = re.compile(r'(\w[\w-]*)="([^"]*)"')
SELECTED = re.compile(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', re.S)
OPTION = re.compile(r'<option value="([^"]*)"([^>]*)>')

Browsers = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def browsers(
    portal_settings: PortalSettings, portal_transports: dict[str, httpx.AsyncBaseTransport], clock: FrozenClock
) -> AsyncIterator[Browsers]:
    """New browsers (each its own cookies) of one portal, for users acting at the same time."""
    app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    opened: list[httpx.AsyncClient] = []

    def new() -> httpx.AsyncClient:
        browser = httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal")
        opened.append(browser)
        return browser

    yield new
    for browser in opened:
        await browser.aclose()


async def signed_in(
    browser: httpx.AsyncClient,
    db: Database,
    clock: FrozenClock,
    sealer: Sealer,
    *,
    grants: dict[str, Accounts],
    functions: list[str],
) -> User:
    """A new login with exactly this access, logged in through `browser`'s portal pages."""
    user = await add_user(db, clock, grants=grants, functions=functions)
    await log_in_through_portal(browser, db, sealer, user.username)
    return user


def form_fields(page: str, action: str) -> dict[str, str]:
    """The fields of the page's form posting to `action` as the browser would send them
    untouched: inputs with their values (ticked radios only), each select's chosen option."""
    for found_action, body in FORM.findall(page):
        if html.unescape(found_action) != action:
            continue
        fields: dict[str, str] = {}
        for attributes in INPUT.findall(body):
            values = dict(ATTRIBUTE.findall(attributes))
            if "name" not in values:
                continue
            if values.get("type") == "radio" and "checked" not in attributes:
                continue
            fields[values["name"]] = html.unescape(values.get("value", ""))
        for name, options in SELECTED.findall(body):
            chosen = [v for v, rest in OPTION.findall(options) if "selected" in rest] or [
                v for v, _ in OPTION.findall(options)
            ][:1]
            fields[name] = html.unescape(chosen[0]) if chosen else ""
        return fields
    raise AssertionError(f"no form posting to {action} on the page")


def text_of(page: str) -> str:
    """The page's words without tags, entities resolved, spaces squeezed: what a person reads."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
