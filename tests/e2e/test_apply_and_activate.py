"""S1, S2: a company applies online, its letter arrives in its e-Boks, the code activates once.

Driven as a person would: HTTP against the running suite, letters read from the e-Boks sink.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from lxml import etree

from services.billing.demo import GROUP_PARENT_CVR, NOT_A_CUSTOMER_CVR, STANDALONE_CVR, generated_companies
from services.notifier.memo import MEMO_NAMESPACE
from services.notifier.sinks import read_sms
from services.suite import Suite
from tests.support.flows import (
    Letter,
    activate,
    activate_letter,
    apply,
    apply_once_known,
    sinks_dir,
    wait_for_letters,
    wait_for_status,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
NS = {"memo": MEMO_NAMESPACE}
OWN_COMPANIES = [c.cvr for c in generated_companies(4)[2:]]  # see EXTRA_CUSTOMERS in conftest


def assert_problem(response: httpx.Response, status: int, type_suffix: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith("/" + type_suffix), body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_an_application_puts_a_memo_letter_in_the_companys_eboks_and_its_code_activates_once(
    suite: Suite,
) -> None:
    response = apply(suite, GROUP_PARENT_CVR)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "received"

    [letter] = wait_for_letters(suite, GROUP_PARENT_CVR)
    status = wait_for_status(suite, accepted["id"], "credentials_sent")
    assert status["delivered_at"] is not None and status["delivered_at"] <= status["deliver_by"]

    root = etree.fromstring(letter.path.read_bytes())
    assert root.tag == f"{{{MEMO_NAMESPACE}}}Message" and root.get("memoVersion") == "1.2"
    assert root.findtext("memo:MessageHeader/memo:messageType", namespaces=NS) == "DIGITALPOST"
    assert (
        root.findtext("memo:MessageHeader/memo:Recipient/memo:recipientID", namespaces=NS) == GROUP_PARENT_CVR
    )
    assert root.findtext("memo:MessageHeader/memo:Recipient/memo:idType", namespaces=NS) == "CVR"
    assert root.findtext("memo:MessageHeader/memo:Sender/memo:idType", namespaces=NS) == "CVR"
    assert letter.memo.message_uuid.hex in letter.path.name.replace("-", "")
    assert letter.username.startswith(GROUP_PARENT_CVR)

    browsed = httpx.get(f"{suite.url('notifier')}/dev/eboks/{GROUP_PARENT_CVR}", timeout=10).json()
    assert [b["message_uuid"] for b in browsed] == [str(letter.memo.message_uuid)]

    # The letter says who applied, with their details masked, and that the activator sets their own.
    flat = " ".join(letter.text.split())
    assert "Mette Holm" in flat and "m•••@example.dk" in flat and "mette@example.dk" not in flat
    assert "angiver selv sit eget mobilnummer og sin egen e-mailadresse" in flat

    # Whoever reads the letter activates with their own mobile and email (typing the code loosely).
    loosely_typed = dataclasses.replace(letter, code=letter.code.lower().replace("-", " "))
    first = activate_letter(suite, loosely_typed, mobile="+4531223344", email="karen@nordlys.example")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "active"
    assert read_sms(sinks_dir(suite), "+4520123456") == []  # nothing went to the application's mobile

    assert_problem(activate(suite, letter.username, letter.code), 409, "already-activated")

    # Its subsidiaries are held by the group's administrator now (S14): no administrator of their own.
    body = refused_as_admin_exists(suite, "33112874", "Nordlys Holding A/S (CVR 35657193)")
    assert "Ask the administrator of Nordlys Holding A/S" in body["detail"]


def test_wrong_codes_are_refused_and_after_five_even_the_right_code_is_refused(suite: Suite) -> None:
    response = apply(suite, STANDALONE_CVR)
    assert response.status_code == 202, response.text
    [letter] = wait_for_letters(suite, STANDALONE_CVR)
    wrong = (
        "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"
        if letter.code != "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"
        else "YYYY-YYYY-YYYY-YYYY-YYYY"
    )

    details = set()
    for _ in range(5):
        body = assert_problem(activate(suite, letter.username, wrong), 400, "invalid-activation-code")
        details.add(body["detail"])
    # The sixth try, even with the right code, finds the code blocked.
    body = assert_problem(activate(suite, letter.username, letter.code), 400, "invalid-activation-code")
    assert "blocked" in body["detail"] and "apply again" in body["detail"]

    # No enumeration: an unknown username gets exactly the answer a wrong code gets.
    unknown = assert_problem(activate(suite, "99999999-abcd", wrong), 400, "invalid-activation-code")
    assert details == {unknown["detail"]}


def test_a_weak_password_is_refused_naming_the_field_without_spending_a_try(suite: Suite) -> None:
    response = activate(suite, "12345678-abcd", "AAAA-AAAA-AAAA-AAAA-AAAA", password="short")
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "password"


@pytest.mark.parametrize(
    ("body_changes", "field"),
    [
        ({"cvr": "35657194"}, "cvr"),
        ({"mobile": "+46701234567"}, "contact.mobile"),
        ({"email": "not-an-email@"}, "contact.email"),
    ],
)
def test_a_wrong_field_is_refused_with_422_naming_it(suite: Suite, body_changes: dict, field: str) -> None:
    cvr = body_changes.pop("cvr", "41204559")
    body = assert_problem(apply(suite, cvr, **body_changes), 422, "validation-error")
    assert [e["field"] for e in body["errors"]] == [field]
    assert body["errors"][0]["message"]


def test_a_company_that_is_not_a_customer_is_refused_with_403(suite: Suite) -> None:
    body = assert_problem(apply(suite, NOT_A_CUSTOMER_CVR), 403, "not-a-customer")
    assert NOT_A_CUSTOMER_CVR in body["detail"]


def test_a_company_with_an_administrator_is_refused_with_409_saying_how_to_recover(suite: Suite) -> None:
    cvr = OWN_COMPANIES[0]
    first = apply_once_known(suite, cvr)
    assert first.status_code == 202, first.text
    [letter] = wait_for_letters(suite, cvr)
    assert activate_letter(suite, letter).status_code == 200

    body = refused_as_admin_exists(suite, cvr, "already has an administrator")
    assert "support" in body["detail"]


def refused_as_admin_exists(suite: Suite, cvr: str, words: str) -> dict:
    """Apply until onboarding answers 409 admin-exists with `words` in the detail. Until its
    projection has caught up it may accept an application; identity, which knows, must then
    refuse it."""
    accepted_meanwhile: list[str] = []

    def refused() -> dict | None:
        response = apply(suite, cvr)
        if response.status_code == 202:
            accepted_meanwhile.append(response.json()["id"])
            return None
        assert response.status_code == 409, response.text
        body: dict = response.json()
        return body if body["type"].endswith("/admin-exists") and words in body["detail"] else None

    body = wait_until(refused, deadline_s=30, what=f"onboarding to refuse CVR {cvr} as admin-exists")
    for application_id in accepted_meanwhile:
        assert wait_for_status(suite, application_id, "rejected")["status_detail"]
    return body


def test_a_login_nobody_activated_is_replaced_by_a_new_application_but_one_in_flight_is_refused(
    suite: Suite,
) -> None:
    cvr = OWN_COMPANIES[1]
    accepted = apply_once_known(suite, cvr)
    assert accepted.status_code == 202, accepted.text
    [first] = wait_for_letters(suite, cvr)
    wait_for_status(suite, accepted.json()["id"], "credentials_sent")  # no longer in flight
    # The letter's login needs the activator's own details (422 naming them), and nothing is used up.
    body = assert_problem(activate(suite, first.username, first.code), 422, "contact-details-required")
    assert [e["field"] for e in body["errors"]] == ["email", "mobile"]

    # Nobody activated it: a new application is accepted and replaces it with a new letter ...
    assert apply(suite, cvr).status_code == 202
    # ... and while that one is in flight, a third is refused (or, if its letter was out already,
    # replaces that login in turn).
    third = apply(suite, cvr)
    if third.status_code != 202:
        assert_problem(third, 409, "application-pending")
    letters = [
        x for x in wait_for_letters(suite, cvr, 2 if third.status_code != 202 else 3) if x.path != first.path
    ]

    def the_live_letter() -> Letter | None:
        if len(letters) == 1:
            return letters[0]
        # Without details a live letter's login answers 422, a withdrawn one's 400 like any wrong code.
        live = [x for x in letters if activate(suite, x.username, x.code).status_code == 422]
        return live[0] if len(live) == 1 else None

    newest = wait_until(the_live_letter, deadline_s=30, what="the newest letter's login", poll_s=1)
    assert activate_letter(suite, newest).status_code == 200
    assert activate(suite, first.username, first.code).status_code == 400  # the first one's code is dead


def test_an_unknown_application_id_is_a_404_problem(suite: Suite) -> None:
    response = httpx.get(f"{suite.url('onboarding')}/v1/applications/00000000-0000-0000-0000-000000000000")
    assert_problem(response, 404, "not-found")
