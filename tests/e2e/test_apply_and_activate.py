"""S1, S2: a company applies online, its letter arrives in its e-Boks, the code activates once.

Driven as a person would: HTTP against the running suite, letters read from the e-Boks sink.
"""

from __future__ import annotations

import httpx
import pytest
from lxml import etree

from services.billing.demo import GROUP_PARENT_CVR, NOT_A_CUSTOMER_CVR, STANDALONE_CVR
from services.notifier.memo import MEMO_NAMESPACE
from services.suite import Suite
from tests.support.flows import activate, apply, wait_for_letters, wait_for_status
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
NS = {"memo": MEMO_NAMESPACE}


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

    first = activate(suite, letter.username, letter.code.lower().replace("-", " "))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "active"

    assert_problem(activate(suite, letter.username, letter.code), 409, "already-activated")


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
    assert "blocked" in body["detail"] and "support" in body["detail"]

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
    cvr = "33112874"
    first = apply(suite, cvr)
    assert first.status_code == 202, first.text
    [letter] = wait_for_letters(suite, cvr)
    assert activate(suite, letter.username, letter.code).status_code == 200

    def refused_as_admin_exists() -> dict | None:
        response = apply(suite, cvr)
        assert response.status_code == 409, response.text
        body = response.json()
        return (
            body
            if body["type"].endswith("/admin-exists") and "already has an administrator" in body["detail"]
            else None
        )

    body = wait_until(
        refused_as_admin_exists, deadline_s=30, what="onboarding to learn the active administrator"
    )
    assert "support" in body["detail"]


def test_a_second_application_while_one_is_in_flight_is_refused_with_409(suite: Suite) -> None:
    cvr = "37826111"
    assert apply(suite, cvr).status_code == 202
    second = apply(suite, cvr)
    assert second.status_code == 409
    # Either still in flight, or already provisioned by the time the second request came.
    assert second.json()["type"].rsplit("/", 1)[1] in {"application-pending", "admin-exists"}


def test_an_unknown_application_id_is_a_404_problem(suite: Suite) -> None:
    response = httpx.get(f"{suite.url('onboarding')}/v1/applications/00000000-0000-0000-0000-000000000000")
    assert_problem(response, 404, "not-found")
