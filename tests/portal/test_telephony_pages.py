"""Telefoni og Personligt Nummer in the portal (S11): the subscriptions a user may set up, and
each setting changed through the page reaching billing, with billing's refusals in words next
to the field, a change made meanwhile shown for redoing, and the pages refused in words to a
user without the telephony function or outside the grants."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.portal.i18n import load_texts
from services.portal.pages import billing_telephony
from tests.portal.billing_forms import browsers  # noqa: F401 - fixture
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.security.world import PARENT, SUBSIDIARY, add_user, bearer, company_group

DANISH, ENGLISH = load_texts()["da"], load_texts()["en"]
Browser = httpx.AsyncClient


def words(message_id: str, **values: object) -> str:
    """A catalogue text as the page shows it (escaped for HTML)."""
    return html.escape(DANISH.gettext(message_id, **values), quote=True)


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


@pytest.fixture
async def billing_api(
    db, clock, settings, billing_transport
) -> AsyncIterator[Callable[[Any], Awaitable[httpx.AsyncClient]]]:
    """Billing's API as a given user, to read back what the pages stored."""
    clients: list[httpx.AsyncClient] = []

    async def as_user(user: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=billing_transport,
            base_url="http://billing",
            headers=await bearer(db, clock, settings, user),
        )
        clients.append(client)
        return client

    yield as_user
    for client in clients:
        await client.aclose()


async def telephony_user(db, clock, grants: dict[str, Any] | None = None, functions: list[str] | None = None):
    return await add_user(
        db,
        clock,
        grants=grants if grants is not None else {SUBSIDIARY: ["10000021"]},
        functions=functions if functions is not None else ["telephony"],
    )


async def logged_in_telephony_user(portal: Browser, db, clock, sealer, grants: dict[str, Any] | None = None):
    """The demo group, and a user with the telephony function (on one account unless `grants`
    says otherwise) logged in through `portal`."""
    await company_group(db, clock)
    user = await telephony_user(db, clock, grants)
    await log_in_through_portal(portal, db, sealer, user.username)
    return user


async def subscription_of(
    billing: httpx.AsyncClient, account: str, kind: str, nth: int = 0
) -> dict[str, Any]:
    listed = await billing.get("/v1/subscriptions", params={"account": account, "limit": 500})
    assert listed.status_code == 200, listed.text
    found = [s for s in listed.json()["items"] if s["product"]["kind"] == kind and s["status"] == "active"]
    return found[nth]


async def settings_of(billing: httpx.AsyncClient, subscription_id: str) -> dict[str, Any]:
    read = await billing.get(f"/v1/subscriptions/{subscription_id}/settings")
    assert read.status_code == 200, read.text
    return read.json()


def version_on(page: httpx.Response, part: str) -> str:
    form = re.search(rf'action="/telefoni/[^/"]+/{part}".*?name="version" value="(\d+)"', page.text, re.S)
    assert form, f"no {part} form on the page"
    return form.group(1)


async def post_on(browser: Browser, path: str, part: str, data: dict[str, Any]) -> httpx.Response:
    """Post the form `part` (indstillinger, medlemmer, ringning, aabningstider) of the settings
    page `path`, as that page does."""
    return await post_form(browser, f"{path}/{part}", data, form_on=path)


def members_form(version: str, *rows: tuple[str, ...], **extra: str) -> dict[str, str]:
    """The members form as a browser posts it: each row's number, and its label where the row
    has one."""
    data = {"version": version}
    for k, row in enumerate(rows):
        data[f"members.{k}.number"] = row[0]
        if len(row) > 1:
            data[f"members.{k}.label"] = row[1]
    return data | extra


def ringing_from(tab: httpx.Response, token: str, strategy: str, seconds: str) -> dict[str, str]:
    """The ringing form as posted from `tab`: with the version that tab was shown."""
    return {
        "csrf_token": token,
        "version": version_on(tab, "ringning"),
        "ring_strategy": strategy,
        "ring_seconds_per_member": seconds,
    }


def hours_form(version: str, days: dict[str, list[tuple[str, str]]], **extra: str) -> dict[str, Any]:
    """The opening-hours form as a browser posts it: rows numbered across the week."""
    data: dict[str, Any] = {"version": version, "hours": "scheduled", "outside_hours": "voicemail", **extra}
    k = 0
    for day, rows in days.items():
        for opens, closes in rows:
            data |= {f"schedule.{k}.days": day, f"schedule.{k}.opens": opens, f"schedule.{k}.closes": closes}
            k += 1
    return data


async def test_the_list_groups_the_subscriptions_on_the_users_accounts_by_kind_each_linking_to_its_settings(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer)
    billing = await billing_api(user)
    page = await portal.get("/telefoni")
    assert page.status_code == 200, page.text
    listed = (await billing.get("/v1/subscriptions", params={"limit": 500})).json()["items"]
    assert {s["account_number"] for s in listed} == {"10000021"}
    captions = re.findall(r"<caption>([^<]+)</caption>", page.text)
    assert captions == [words("telephony.kind.mobile"), words("telephony.kind.personal_number")]
    linked = set(re.findall(r'href="/telefoni/([0-9a-f-]{36})"', page.text))
    assert linked == {s["id"] for s in listed if s["product"]["kind"] in ("mobile", "personal_number")}
    assert len(linked) == 5

    switched = await portal.get("/sprog", params={"til": "en", "next": "/telefoni"})
    assert switched.status_code == 303, switched.text
    english = await portal.get("/telefoni")
    assert f"<caption>{html.escape(ENGLISH.gettext('telephony.kind.mobile'))}</caption>" in english.text
    assert f"<h1>{html.escape(ENGLISH.gettext('telephony.heading'))}</h1>" in english.text


async def test_each_line_setting_changed_through_the_page_reaches_billing(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer)
    billing = await billing_api(user)
    line = await subscription_of(billing, "10000021", "mobile", nth=0)
    path = f"/telefoni/{line['id']}"
    shown = await portal.get(path)
    assert shown.status_code == 200, shown.text
    for name in (
        "call_forwarding.mode",
        "call_forwarding.target",
        "call_forwarding.no_answer_seconds",
        "voicemail.enabled",
        "voicemail.notify_by_sms",
        "caller_id.presentation",
        "caller_id.main_number",
    ):
        assert f'name="{name}"' in shown.text, name
    before = await settings_of(billing, line["id"])

    saved = await post_on(
        portal,
        path,
        "indstillinger",
        {
            "version": version_on(shown, "indstillinger"),
            "call_forwarding.mode": "no_answer",
            "call_forwarding.target": "20 12 34 56",
            "call_forwarding.no_answer_seconds": "25",
            # voicemail.enabled unticked: a checkbox left out of the form is off
            "voicemail.notify_by_sms": "true",
            "caller_id.presentation": "main_number",
            "caller_id.main_number": "+45 33 12 34 56",
        },
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"{path}?gemt=indstillinger", saved.text
    after = await settings_of(billing, line["id"])
    assert after["version"] == before["version"] + 1
    assert after["settings"] == {
        "call_forwarding": {"mode": "no_answer", "target": "+4520123456", "no_answer_seconds": 25},
        "voicemail": {"enabled": False, "notify_by_sms": True},
        "caller_id": {"presentation": "main_number", "main_number": "+4533123456"},
    }
    confirmed = await portal.get(saved.headers["location"])
    assert words("telephony.saved.indstillinger") in confirmed.text
    assert 'value="+4520123456"' in confirmed.text

    hidden = await post_on(
        portal,
        path,
        "indstillinger",
        {
            "version": str(after["version"]),
            "call_forwarding.mode": "off",
            "voicemail.enabled": "true",
            "caller_id.presentation": "hidden",
        },
    )
    assert hidden.status_code == 303, hidden.text
    assert (await settings_of(billing, line["id"]))["settings"]["caller_id"]["presentation"] == "hidden"


async def test_a_refused_line_setting_is_said_in_words_next_to_its_field_and_nothing_is_stored(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer)
    billing = await billing_api(user)
    line = await subscription_of(billing, "10000021", "mobile", nth=1)
    path = f"/telefoni/{line['id']}"
    before = await settings_of(billing, line["id"])
    for typed, field, message_id in (
        (
            {"call_forwarding.mode": "always", "call_forwarding.target": "+44 20 7946 0000"},
            "call_forwarding.target",
            "telephony.invalid.call_forwarding.target",
        ),
        (
            {"call_forwarding.mode": "always", "call_forwarding.target": line["identifier"]},
            "call_forwarding.target",
            "telephony.invalid.call_forwarding.target",
        ),
        ({"call_forwarding.mode": "busy"}, "call_forwarding.target", "telephony.invalid.call_forwarding"),
        (
            {"call_forwarding.mode": "off", "call_forwarding.no_answer_seconds": "90"},
            "call_forwarding.no_answer_seconds",
            "telephony.invalid.call_forwarding.no_answer_seconds",
        ),
        (
            {"call_forwarding.mode": "off", "caller_id.presentation": "main_number"},
            "caller_id.main_number",
            "telephony.invalid.caller_id",
        ),
    ):
        refused = await post_on(portal, path, "indstillinger", {"version": str(before["version"]), **typed})
        assert refused.status_code == 422, refused.text
        field_id = "f-" + field.replace(".", "-")
        error = re.search(rf'<p class="error" id="{field_id}-error">([^<]+)</p>', refused.text)
        assert error and error.group(1) == words(message_id), (typed, error and error.group(1))
        # The typed values stay in the form to be corrected.
        if "call_forwarding.target" in typed:
            assert f'value="{html.escape(typed["call_forwarding.target"])}"' in refused.text
    assert await settings_of(billing, line["id"]) == before


async def test_members_are_added_and_removed_and_ring_in_the_chosen_order_through_the_page(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer)
    billing = await billing_api(user)
    pn = await subscription_of(billing, "10000021", "personal_number")
    path = f"/telefoni/{pn['id']}"
    shown = await portal.get(path)
    assert shown.status_code == 200, shown.text
    version = version_on(shown, "medlemmer")

    # "Add a row" (no JS) shows one more empty row and keeps what was typed; nothing is stored.
    more = await post_on(
        portal, path, "medlemmer", members_form(version, ("20 11 22 33", "Mobil"), add_row="1")
    )
    assert more.status_code == 200, more.text
    assert 'value="20 11 22 33"' in more.text and 'name="members.2.number"' in more.text
    assert str((await settings_of(billing, pn["id"]))["version"]) == version

    added = await post_on(
        portal,
        path,
        "medlemmer",
        members_form(version, ("20 11 22 33", "Mobil"), ("+4533445566", "Kontor"), ("", "")),
    )
    assert added.status_code == 303, added.text
    stored = await settings_of(billing, pn["id"])
    assert stored["settings"]["members"] == [
        {"number": "+4520112233", "label": "Mobil"},
        {"number": "+4533445566", "label": "Kontor"},
    ]

    twice = await post_on(
        portal,
        path,
        "medlemmer",
        members_form(str(stored["version"]), ("+4520112233",), ("+4533445566",), ("33 44 55 66",)),
    )
    assert twice.status_code == 422 and words("telephony.invalid.members") in twice.text
    itself = await post_on(
        portal, path, "medlemmer", members_form(str(stored["version"]), ("20112233",), ("12",))
    )
    assert itself.status_code == 422
    error = re.search(r'<p class="error" id="f-members-1-number-error">([^<]+)</p>', itself.text)
    assert error and error.group(1) == words("telephony.invalid.members.item.number")
    assert await settings_of(billing, pn["id"]) == stored

    removed = await post_on(
        portal,
        path,
        "medlemmer",
        members_form(str(stored["version"]), ("+4520112233", "Mobil"), ("+4533445566", "Kontor"), remove="0"),
    )
    assert removed.status_code == 303, removed.text
    stored = await settings_of(billing, pn["id"])
    assert stored["settings"]["members"] == [{"number": "+4533445566", "label": "Kontor"}]

    ringing = await post_on(
        portal,
        path,
        "ringning",
        {"version": str(stored["version"]), "ring_strategy": "in_order", "ring_seconds_per_member": "12"},
    )
    assert ringing.status_code == 303, ringing.text
    stored = await settings_of(billing, pn["id"])
    assert (stored["settings"]["ring_strategy"], stored["settings"]["ring_seconds_per_member"]) == (
        "in_order",
        12,
    )


async def test_opening_hours_with_an_overlap_are_refused_in_words_next_to_the_interval_and_nothing_is_stored(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer, grants={PARENT: ["10000011"]})
    billing = await billing_api(user)
    pn = await subscription_of(billing, "10000011", "personal_number")
    path = f"/telefoni/{pn['id']}"
    shown = await portal.get(path)
    before = await settings_of(billing, pn["id"])
    version = version_on(shown, "aabningstider")

    overlapping = hours_form(
        version,
        {"mon": [("08:00", "12:00"), ("11:30", "16:00")], "tue": [("08:00", "16:00")]},
    )
    refused = await post_on(portal, path, "aabningstider", overlapping)
    assert refused.status_code == 422, refused.text
    # Next to Monday's second interval (row 1), tied to its opening time for screen readers.
    error = re.search(r'<p class="error" id="f-schedule-1-error">([^<]+)</p>', refused.text)
    assert error and error.group(1) == words("telephony.invalid.schedule.item")
    opens = re.search(r'<input id="f-schedule-1-opens"[^>]*>', refused.text)
    assert opens and 'aria-invalid="true"' in opens.group(0) and "f-schedule-1-error" in opens.group(0)
    assert 'value="11:30"' in refused.text
    assert await settings_of(billing, pn["id"]) == before

    backwards = await post_on(
        portal, path, "aabningstider", hours_form(version, {"wed": [("16:00", "08:00")]})
    )
    assert backwards.status_code == 422
    wednesday = re.search(r'<fieldset class="day" id="day-wed">(.*?)</fieldset>', backwards.text, re.S)
    assert wednesday, "the error is not with Wednesday"
    error = re.search(r'<p class="error" id="f-schedule-\d+-closes-error">([^<]+)</p>', wednesday.group(1))
    assert error and error.group(1) == words("telephony.invalid.schedule.item.closes")

    nothing_open = await post_on(portal, path, "aabningstider", hours_form(version, {}, closed="mon"))
    assert nothing_open.status_code == 422 and words("telephony.invalid.schedule-empty") in nothing_open.text
    assert await settings_of(billing, pn["id"]) == before

    valid = hours_form(
        version,
        {
            "mon": [("08:00", "12:00"), ("12:30", "16:00")],
            "tue": [("08:00", "16:00")],
            "sat": [("10:00", "12:00")],
        },
        outside_hours="forward",
        outside_hours_target="70 10 20 30",
        closed="sat",  # a closed day's rows are not sent
    )
    saved = await post_on(portal, path, "aabningstider", valid)
    assert saved.status_code == 303, saved.text
    stored = (await settings_of(billing, pn["id"]))["settings"]
    assert stored["schedule"] == [
        {"days": ["mon"], "opens": "08:00:00", "closes": "12:00:00"},
        {"days": ["mon"], "opens": "12:30:00", "closes": "16:00:00"},
        {"days": ["tue"], "opens": "08:00:00", "closes": "16:00:00"},
    ]
    assert (stored["outside_hours"], stored["outside_hours_target"]) == ("forward", "+4570102030")
    reread = await portal.get(path)
    assert 'id="f-closed-wed" name="closed" value="wed" checked' in reread.text
    assert 'value="12:30"' in reread.text


async def test_a_change_made_meanwhile_in_another_tab_gives_the_second_tab_the_changed_meanwhile_page(
    db, clock, sealer, portal, billing_api
) -> None:
    user = await logged_in_telephony_user(portal, db, clock, sealer, grants={PARENT: ["10000012"]})
    billing = await billing_api(user)
    pn = await subscription_of(billing, "10000012", "personal_number")
    path = f"/telefoni/{pn['id']}"
    first_tab, second_tab = await portal.get(path), await portal.get(path)
    token = await csrf_of(portal, path)

    first = await portal.post(f"{path}/ringning", data=ringing_from(first_tab, token, "in_order", "20"))
    assert first.status_code == 303, first.text
    stored = await settings_of(billing, pn["id"])
    second = await portal.post(f"{path}/ringning", data=ringing_from(second_tab, token, "simultaneous", "30"))
    assert second.status_code == 409, second.text
    assert words("telephony.stale") in second.text and words("telephony.stale-redo") in second.text
    assert await settings_of(billing, pn["id"]) == stored, "the second tab's change overwrote the first's"
    # What is saved now beside the second tab's change, and the change filled in to redo.
    assert re.search(
        rf"<th scope=\"row\">{words('telephony.setting.ring_strategy')}</th><td>"
        rf"{words('telephony.ring_strategy.in_order')}</td><td>{words('telephony.ring_strategy.simultaneous')}</td>",
        second.text,
    )
    assert (
        'id="f-ring_strategy-simultaneous" name="ring_strategy" value="simultaneous" checked' in second.text
    )
    assert version_on(second, "ringning") == str(stored["version"])

    redone = await portal.post(f"{path}/ringning", data=ringing_from(second, token, "simultaneous", "30"))
    assert redone.status_code == 303, redone.text
    assert (await settings_of(billing, pn["id"]))["settings"]["ring_strategy"] == "simultaneous"

    # The same with opening hours: the second tab's intervals come back to be saved again.
    first_tab, second_tab = await portal.get(path), await portal.get(path)
    first = await portal.post(
        f"{path}/aabningstider",
        data={
            "csrf_token": token,
            **hours_form(version_on(first_tab, "aabningstider"), {"fri": [("09:00", "15:00")]}),
        },
    )
    assert first.status_code == 303, first.text
    stored = await settings_of(billing, pn["id"])
    second = await portal.post(
        f"{path}/aabningstider",
        data={
            "csrf_token": token,
            **hours_form(version_on(second_tab, "aabningstider"), {"thu": [("10:00", "14:00")]}),
        },
    )
    assert second.status_code == 409 and words("telephony.stale") in second.text
    assert await settings_of(billing, pn["id"]) == stored
    assert (
        f"{words('telephony.day.fri')} 09:00–15:00</td><td>{words('telephony.day.thu')} 10:00–14:00"
        in second.text
    )
    thursday = re.search(r'<fieldset class="day" id="day-thu">(.*?)</fieldset>', second.text, re.S)
    assert thursday and 'value="10:00"' in thursday.group(1) and 'value="14:00"' in thursday.group(1)


async def test_users_without_the_function_or_the_grant_are_refused_in_words_while_another_changes_settings_at_the_same_time(
    db, clock, sealer, browsers, billing_api
) -> None:
    await company_group(db, clock)
    allowed = await telephony_user(db, clock)
    no_function = await telephony_user(db, clock, functions=["invoices", "orders"])
    other_account = await telephony_user(db, clock, grants={SUBSIDIARY: ["10000022"], PARENT: ["10000011"]})
    billing, other_billing = await billing_api(allowed), await billing_api(other_account)
    line = await subscription_of(billing, "10000021", "mobile", nth=2)
    foreign = await subscription_of(other_billing, "10000011", "mobile")
    before, foreign_before = (
        await settings_of(billing, line["id"]),
        await settings_of(other_billing, foreign["id"]),
    )

    users = {"allowed": allowed, "no_function": no_function, "other_account": other_account}
    opened = {name: browsers() for name in users}
    for name, user in users.items():  # one at a time: the login codes are read from the outbox
        await log_in_through_portal(opened[name], db, sealer, user.username)
    tokens = {name: await csrf_of(browser, "/profil") for name, browser in opened.items()}
    path = f"/telefoni/{line['id']}"
    change = {
        "version": str(before["version"]),
        "call_forwarding.mode": "always",
        "call_forwarding.target": "20 30 40 50",
        "voicemail.enabled": "true",
        "caller_id.presentation": "own_number",
    }

    def post(name: str, to: str) -> Awaitable[httpx.Response]:
        return opened[name].post(to, data={**change, "csrf_token": tokens[name]})

    answers = await asyncio.gather(
        post("allowed", f"{path}/indstillinger"),
        post("no_function", f"{path}/indstillinger"),
        post("other_account", f"{path}/indstillinger"),
        opened["no_function"].get(path),
        opened["no_function"].get("/telefoni"),
        opened["other_account"].get(path),
        opened["allowed"].get(f"/telefoni/{foreign['id']}"),
        post("allowed", f"/telefoni/{foreign['id']}/indstillinger"),
        opened["allowed"].get(f"/telefoni/{uuid.uuid4()}"),
    )
    changed, *refused = answers
    assert changed.status_code == 303, changed.text
    statuses = [answer.status_code for answer in refused]
    assert statuses == [403, 404, 403, 403, 404, 404, 404, 404], statuses
    for answer in refused:
        expected = "error.needs-telephony" if answer.status_code == 403 else "telephony.not-found"
        assert words(expected) in answer.text, answer.text
    after = await settings_of(billing, line["id"])
    assert after["version"] == before["version"] + 1
    assert after["settings"]["call_forwarding"] == {
        "mode": "always",
        "target": "+4520304050",
        "no_answer_seconds": 20,
    }
    assert await settings_of(other_billing, foreign["id"]) == foreign_before


async def test_the_list_is_shown_a_page_of_billings_list_at_a_time_and_the_pages_cover_every_subscription_once(
    db, clock, sealer, portal, billing_api, monkeypatch
) -> None:
    monkeypatch.setattr(billing_telephony, "PAGE_SIZE", 2)
    user = await logged_in_telephony_user(portal, db, clock, sealer)
    billing = await billing_api(user)
    listed = (await billing.get("/v1/subscriptions", params={"limit": 500})).json()["items"]
    seen: list[str] = []
    path: str | None = "/telefoni"
    pages = 0
    while path:
        shown = await portal.get(html.unescape(path))
        assert shown.status_code == 200, shown.text
        pages += 1
        seen += re.findall(r'href="/telefoni/([0-9a-f-]{36})"', shown.text)
        following = re.search(
            rf'<a href="(/telefoni\?side=[^"]+)">{words("telephony.next-page")}</a>', shown.text
        )
        path = following.group(1) if following else None
    assert sorted(seen) == sorted(s["id"] for s in listed) and pages == 3


async def test_two_users_changing_the_same_line_at_the_same_time_store_one_change_and_the_other_gets_the_changed_meanwhile_page(
    db, clock, sealer, browsers, billing_api
) -> None:
    await company_group(db, clock)
    first_user, second_user = await telephony_user(db, clock), await telephony_user(db, clock)
    billing = await billing_api(first_user)
    line = await subscription_of(billing, "10000021", "mobile", nth=3)
    before = await settings_of(billing, line["id"])
    path = f"/telefoni/{line['id']}"
    first, second = browsers(), browsers()
    await log_in_through_portal(first, db, sealer, first_user.username)
    await log_in_through_portal(second, db, sealer, second_user.username)
    forms = []
    for browser, target in ((first, "20 11 11 11"), (second, "20 22 22 22")):
        shown = await browser.get(path)
        forms.append(
            {
                "csrf_token": await csrf_of(browser, path),
                "version": version_on(shown, "indstillinger"),
                "call_forwarding.mode": "always",
                "call_forwarding.target": target,
                "voicemail.enabled": "true",
                "caller_id.presentation": "own_number",
            }
        )
    answers = await asyncio.gather(
        first.post(f"{path}/indstillinger", data=forms[0]),
        second.post(f"{path}/indstillinger", data=forms[1]),
    )
    assert sorted(answer.status_code for answer in answers) == [303, 409], [a.status_code for a in answers]
    stored = await settings_of(billing, line["id"])
    assert stored["version"] == before["version"] + 1
    winner = 0 if answers[0].status_code == 303 else 1
    assert stored["settings"]["call_forwarding"]["target"] == ("+4520111111", "+4520222222")[winner]
    assert words("telephony.stale") in answers[1 - winner].text
