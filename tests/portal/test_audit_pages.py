"""The audit trail's pages (S13): an administrator reads their company's trail at /revision —
actions in words, times in Danish time, filters and older pages — and the support console has
the same filters; nobody without user administration gets the page."""

# ruff: noqa: F811 - fixtures are imported from test_login and test_support_pages and used by name

from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from services.identity.audit import AuditTrail
from services.identity.models import messaging
from services.portal.i18n import load_texts
from shared.clock import FrozenClock
from shared.db import Database
from shared.messaging import Outbox
from tests.portal.conftest import log_in_through_portal
from tests.portal.test_support_pages import (  # noqa: F401 - fixtures
    COMPANY_PAGE,
    browser_of,
    jwks_client,
    notifier_transport,
    onboarding_transport,
    portal,
    portal_transport,
    portal_transports,
    staff_logged_in,
)
from tests.security.world import PARENT, SUBSIDIARY, add_user, company_group, group_administrator

ROW = re.compile(r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", re.S)
OLDER = re.compile(r'<a href="([^"]+)" rel="next">')


def rows(page: httpx.Response) -> list[tuple[str, ...]]:
    """The audit table's rows: (time, action, done by, concerns), as text."""
    trail = page.text.split('id="audit-heading"')[-1]  # on the support console, after the other sections
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in row) for row in ROW.findall(trail)]


async def failed_logins(client: httpx.AsyncClient, username: str, times: int, clock: FrozenClock) -> None:
    for n in range(times):
        clock.advance(timedelta(minutes=1))
        answer = await client.post("/v1/login", json={"username": username, "password": f"guess {n}"})
        assert answer.status_code == 401, answer.text


async def test_an_administrator_reads_the_trail_in_words_in_danish_time_and_filters_it(
    db, clock, sealer, client, portal_transport
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    colleague = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"], name="Jonas Berg")
    await failed_logins(client, colleague.username, 2, clock)
    async with browser_of(portal_transport) as browser:
        clock.advance(timedelta(minutes=1))
        await log_in_through_portal(browser, db, sealer, admin.username)
        page = await browser.get("/revision")
        assert page.status_code == 200, page.text
        assert '<a href="/revision" aria-current="page">Revisionsspor</a>' in page.text
        assert page.text.count("<h1>") == 1
        when = load_texts()["da"].when
        assert rows(page) == [
            (when(clock.now()), "Logget ind", "Dig", admin.name),
            (when(clock.now() - timedelta(minutes=1)), "Forkert login (forkert adgangskode)", "Jonas Berg", "Jonas Berg"),
            (when(clock.now() - timedelta(minutes=2)), "Forkert login (forkert adgangskode)", "Jonas Berg", "Jonas Berg"),
        ]

        failed = await browser.get("/revision", params={"action": "login.failed", "user_id": colleague.id})
        assert [r[1] for r in rows(failed)] == ["Forkert login (forkert adgangskode)"] * 2
        assert '<option value="login.failed" selected>' in failed.text
        today = clock.now().date().isoformat()
        tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
        assert len(rows(await browser.get("/revision", params={"from": today, "to": today}))) == 3
        assert rows(await browser.get("/revision", params={"from": tomorrow})) == []


async def test_older_entries_are_on_the_next_pages_with_the_same_filters(db, clock, sealer, portal_transport) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    colleague = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    audit = AuditTrail(outbox=Outbox(messaging, clock), clock=clock)
    for _ in range(30):
        clock.advance(timedelta(seconds=1))
        async with db.transaction() as session:
            await audit.record(session, actor=colleague, action="login.failed", target=colleague)
    async with browser_of(portal_transport) as browser:
        await log_in_through_portal(browser, db, sealer, admin.username)
        first = await browser.get("/revision", params={"action": "login.failed"})
        older = OLDER.search(first.text)
        assert len(rows(first)) == 25 and older is not None
        link = html.unescape(older.group(1))
        assert parse_qs(urlsplit(link).query)["action"] == ["login.failed"]
        second = await browser.get(link)
        assert len(rows(second)) == 5 and OLDER.search(second.text) is None
        assert "Til de nyeste" in second.text


async def test_a_wrong_filter_is_told_next_to_its_field(db, clock, sealer, portal_transport) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    async with browser_of(portal_transport) as browser:
        await log_in_through_portal(browser, db, sealer, admin.username)
        for params, field, words in [
            ({"from": "1. december"}, "from", "Skriv en dato som 2026-12-01."),
            ({"from": "2026-12-05", "to": "2026-12-01"}, "to", "samme dag som eller senere end fra-datoen"),
            ({"action": "drop table"}, "action", "Vælg en hændelse på listen."),
            ({"before": "not-a-cursor"}, "before", "Begynd forfra fra de nyeste hændelser."),
        ]:
            page = await browser.get("/revision", params=params)
            assert page.status_code == 422, (params, page.text)
            assert words in page.text, params
            if field != "before":
                assert f'id="f-audit-{field}-error"' in page.text and 'aria-invalid="true"' in page.text


async def test_only_administrators_get_the_page_and_the_menu_link_while_others_ask_at_once(
    db, clock, sealer, client, portal_transport, portal
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    plain = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"])
    await staff_logged_in(db, clock, sealer, client, portal)
    async with (
        browser_of(portal_transport) as as_admin,
        browser_of(portal_transport) as as_plain,
        browser_of(portal_transport) as stranger,
    ):
        await log_in_through_portal(as_admin, db, sealer, admin.username)
        await log_in_through_portal(as_plain, db, sealer, plain.username)
        overview = await as_plain.get("/oversigt")
        assert 'href="/revision"' not in overview.text
        answers = await asyncio.gather(
            *[as_plain.get("/revision") for _ in range(3)],
            *[portal.get("/revision") for _ in range(3)],
            *[stranger.get("/revision") for _ in range(3)],
            *[as_admin.get("/revision") for _ in range(3)],
        )
    assert [a.status_code for a in answers] == [403] * 6 + [303] * 3 + [200] * 3
    assert all("administrere selvbetjeningsbrugere" in a.text for a in answers[:3])
    assert all(a.headers["location"].startswith("/log-ind?next=") for a in answers[6:9])


async def test_the_support_console_filters_a_companys_trail_the_same_way(
    db: Database, clock, sealer, client, portal
) -> None:
    await company_group(db, clock)
    colleague = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"], name="Jonas Berg")
    await failed_logins(client, colleague.username, 2, clock)
    await staff_logged_in(db, clock, sealer, client, portal)
    page = await portal.get(COMPANY_PAGE, params={"action": "login.failed"})
    assert page.status_code == 200, page.text
    # Staff see the action's code beside its words.
    failed = ("Forkert login (forkert adgangskode) login.failed", "Jonas Berg", "Jonas Berg")
    assert [r[1:] for r in rows(page)] == [failed] * 2
    everything = await portal.get(COMPANY_PAGE)
    assert {r[1] for r in rows(everything)} == {failed[0], "Support så virksomhedens logins support.list-users"}
    wrong = await portal.get(COMPANY_PAGE, params={"from": "i går"})
    assert wrong.status_code == 422 and "Skriv en dato som 2026-12-01." in wrong.text
