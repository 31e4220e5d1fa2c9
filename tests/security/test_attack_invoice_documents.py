"""Attacks on billing's invoice documents (S8, S10, S14): master data that would break or
garble the documents, and documents that hold up the rest of billing while they render."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import date, timedelta

import httpx
import pytest
from lxml import etree
from sqlalchemy import update

from services.billing import documents, rendering
from services.billing.bootstrap import BillingParts
from services.billing.invoicing import invoice_id_for
from services.billing.models import Invoice
from services.billing.worker import handlers as billing_handlers
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import UserDisabled, UserGrantsChanged
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    Tokens,
    billing,
    billing_clock,
    billing_db,
    billing_parts,
    billing_url,
    tokens,
)
from tests.integration.test_activation import envelope_of
from tests.integration.test_billing_documents import (  # noqa: F401 - fixtures
    NS,
    OIOUBL_ACCOUNT,
    PAPER_ACCOUNT,
    PEPPOL_ACCOUNT,
    READER_TOKEN,
    bearer,
    issued,
    reader,
    xml_schema,
)
from tests.support.waiting import wait_until_async

OCTOBER = date(2026, 10, 1)
NORDLYS = "37826111"  # the company of the OIOUBL and Peppol accounts

# Text an invoice cannot carry: XML 1.0 refuses control characters outright (the e-invoice
# could not be rendered at all), a right-to-left override reorders what the PDF shows, and
# characters outside the shipped font print as gaps.
UNPRINTABLE = [
    ("street", "Vestergade\x01 1"),
    ("city", "Odense\x1b[2J"),
    ("street", "Vestergade 1\u202e0001 .rn otnoK"),
    ("city", "Odense \u200b C"),
    ("street", "公司路 1"),
    ("city", "Odense 🚀"),
]


async def test_master_data_an_invoice_cannot_print_fired_in_parallel_is_each_refused_naming_the_field(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    read = await billing.get(f"/v1/companies/{NORDLYS}/master-data", headers=admin.headers)
    assert read.status_code == 200, read.text
    headers = {**admin.headers, "If-Match": read.headers["etag"]}

    answers = await asyncio.gather(
        *(
            billing.patch(f"/v1/companies/{NORDLYS}/master-data", json={field: value}, headers=headers)
            for field, value in UNPRINTABLE
        )
    )
    for (field, value), answer in zip(UNPRINTABLE, answers, strict=True):
        assert answer.status_code == 422, (value, answer.text)
        problem = answer.json()
        assert problem["errors"][0]["field"] == field, problem
        assert "cannot be printed on the company's invoices" in problem["errors"][0]["message"], problem
    after = await billing.get(f"/v1/companies/{NORDLYS}/master-data", headers=admin.headers)
    assert after.json() == read.json()

    # Danish and other Latin letters, dashes and quotes are printed, so they are taken.
    fine = await billing.patch(
        f"/v1/companies/{NORDLYS}/master-data",
        json={"street": "Ærøvej 2–4, “Gården”", "city": "Łódź-Åbyhøj"},
        headers=headers,
    )
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(("account", "format"), [(OIOUBL_ACCOUNT, "oioubl"), (PEPPOL_ACCOUNT, "peppol")])
async def test_an_invoice_stored_with_control_characters_still_renders_valid_e_invoices(
    reader: httpx.AsyncClient, billing_db: Database, account: str, format: str
) -> None:
    """Master data stored before the rule above (migration 0004 copied it into the snapshots)
    must not make the e-invoice impossible to render: the characters XML cannot carry are left out."""
    invoice_id = invoice_id_for(account, OCTOBER)
    async with billing_db.transaction() as session:
        await session.execute(
            update(Invoice)
            .where(Invoice.id == invoice_id)
            .values(buyer_street="Vestergade\x01 1\x0b", buyer_city="Odense\x1b C")
        )
    path = f"/internal/v1/invoices/{invoice_id}/document"
    answers = await asyncio.gather(
        *(reader.get(path, params={"format": format}, headers=bearer(READER_TOKEN)) for _ in range(4))
    )
    for answer in answers:
        assert answer.status_code == 200, answer.text
        root = etree.fromstring(answer.content)
        assert xml_schema().validate(root)
        buyer = root.find("cac:AccountingCustomerParty/cac:Party/cac:PostalAddress", namespaces=NS)
        assert buyer is not None
        assert buyer.findtext("cbc:StreetName", namespaces=NS) == "Vestergade 1"
        assert buyer.findtext("cbc:CityName", namespaces=NS) == "Odense C"


async def test_documents_rendering_in_parallel_leave_billing_answering_meanwhile(
    reader: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PDF of a long invoice takes seconds to render (about a second per thousand lines): a
    user asking for it again and again in parallel must not stop billing answering anyone else.
    Each render here waits until billing has answered /healthz and a user's invoice list,
    which it can only do while the renders run beside its event loop, not on it."""
    answered = threading.Event()
    waited: list[bool] = []
    real_render_pdf = rendering.render_pdf

    def render_pdf_held_until_billing_answered(document: documents.InvoiceDocument) -> bytes:
        waited.append(answered.wait(timeout=20))  # a deadline, not a pause: set as soon as answered
        return real_render_pdf(document)

    monkeypatch.setattr(rendering, "render_pdf", render_pdf_held_until_billing_answered)
    admin = tokens.group_admin()
    invoice_id = invoice_id_for(PAPER_ACCOUNT, OCTOBER)

    async def others_meanwhile() -> None:
        health = await reader.get("/healthz")
        listed = await reader.get("/v1/invoices", params={"limit": 5}, headers=admin.headers)
        assert health.status_code == 200 and listed.status_code == 200, listed.text
        answered.set()

    pdfs = [
        reader.get(f"/v1/invoices/{invoice_id}", headers={**admin.headers, "Accept": "application/pdf"}),
        reader.get(f"/v1/invoices/{invoice_id}/document", params={"format": "pdf"}, headers=admin.headers),
        reader.get(
            f"/internal/v1/invoices/{invoice_id}/document", params={"format": "pdf"}, headers=bearer(READER_TOKEN)
        ),
    ]
    *answers, _ = await asyncio.gather(*pdfs, others_meanwhile())
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.content.startswith(b"%PDF-")
    assert waited == [True, True, True], "a render held billing's event loop: nobody else was answered"


async def test_documents_asked_for_in_parallel_render_at_most_the_configured_number_at_once(
    reader: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve PDFs asked for at once by a user: two render side by side (the default
    `document_render_concurrency`), the others wait their turn, all are answered."""
    lock = threading.Lock()
    running: list[int] = [0]
    most: list[int] = [0]
    two_at_once = threading.Event()
    real_render_pdf = rendering.render_pdf

    def render_pdf_counted(document: documents.InvoiceDocument) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            if running[0] == 2:
                two_at_once.set()
        try:
            two_at_once.wait(timeout=20)  # the limit lets two run together: they do not queue in one
            return real_render_pdf(document)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(rendering, "render_pdf", render_pdf_counted)
    admin = tokens.group_admin()
    invoice_id = invoice_id_for(PAPER_ACCOUNT, OCTOBER)
    asked = [reader.get(f"/v1/invoices/{invoice_id}/document", headers=admin.headers) for _ in range(6)] + [
        reader.get(f"/v1/invoices/{invoice_id}", headers={**admin.headers, "Accept": "application/pdf"})
        for _ in range(6)
    ]
    answers = await asyncio.gather(*asked)
    assert [answer.status_code for answer in answers] == [200] * 12
    assert two_at_once.is_set() and most[0] == 2


ACCEPT_TRICKS = [
    "application/pdf;q=0",
    "application/pdf;q=0, application/json;q=0",
    "*/*",
    "application/*",
    "application/pdf;q=inf",
    "application/pdf;q=nan, application/xml;q=1e309",
    "application/pdf; charset=\"x, application/json\"",
    "APPLICATION/PDF ; Q=1",
    "text/xml;profile=peppol",
    ",,,;;;=,application/pdf",
    "a" * 1000,
]


async def test_accept_tricks_and_several_accept_headers_fired_in_parallel_never_open_a_foreign_invoice(
    reader: httpx.AsyncClient, tokens: Tokens
) -> None:
    """S14: whatever `Accept` says, however often it is sent, a colleague limited to two accounts
    is told of any other invoice exactly what they are told of an id that does not exist."""
    colleague = tokens.caller([{"cvr": NORDLYS, "accounts": [OIOUBL_ACCOUNT, PEPPOL_ACCOUNT]}], ["invoices"])
    foreign = [invoice_id_for(PAPER_ACCOUNT, OCTOBER), invoice_id_for("10000051", OCTOBER), str(uuid.uuid4())]
    planned: list[tuple[str, list[tuple[str, str]]]] = []
    for invoice_id in foreign:
        for accept in ACCEPT_TRICKS:
            planned.append((invoice_id, [("Accept", accept)]))
        planned.append((invoice_id, [("Accept", "application/json"), ("Accept", "application/pdf")]))
        planned.append((invoice_id, [("Accept", "application/pdf"), ("Accept", "application/xml")]))
    answers = await asyncio.gather(
        *(
            reader.get(f"/v1/invoices/{invoice_id}", headers=[*colleague.headers.items(), *accepts])
            for invoice_id, accepts in planned
        )
    )
    bodies = set()
    for (invoice_id, accepts), answer in zip(planned, answers, strict=True):
        assert answer.status_code in (404, 422), (invoice_id, accepts, answer.text)
        assert not answer.content.startswith((b"%PDF", b"<?xml")), (invoice_id, accepts)
        if answer.status_code == 404:
            body = answer.json()
            body.pop("instance")
            bodies.add(tuple(sorted(body.items())))
    assert len(bodies) == 1  # a foreign invoice says exactly what a missing one says

    own = invoice_id_for(OIOUBL_ACCOUNT, OCTOBER)
    refused_pdf = await reader.get(
        f"/v1/invoices/{own}", headers={**colleague.headers, "Accept": "application/pdf;q=0, application/json"}
    )
    assert refused_pdf.status_code == 200 and refused_pdf.json()["id"] == own


async def test_tokens_of_a_disabled_or_narrowed_user_open_no_document_however_many_are_fired_at_once(
    reader: httpx.AsyncClient,
    tokens: Tokens,
    billing_db: Database,
    billing_clock: FrozenClock,
    billing_parts: BillingParts,
) -> None:
    """S12, S14: an access token is valid for minutes; a user disabled, or narrowed to fewer
    accounts, meanwhile reads no document with the token they still hold."""
    disabled_id, narrowed_id = str(uuid.uuid4()), str(uuid.uuid4())
    grant = [{"cvr": NORDLYS, "accounts": [OIOUBL_ACCOUNT, PEPPOL_ACCOUNT]}]
    disabled = tokens.caller(grant, ["invoices"], user_id=disabled_id)
    narrowed = tokens.caller(grant, ["invoices"], user_id=narrowed_id)
    invoice_id = invoice_id_for(PEPPOL_ACCOUNT, OCTOBER)
    handlers = billing_handlers(billing_parts)
    billing_clock.advance(timedelta(seconds=2))
    for event in (
        UserDisabled(user_id=uuid.UUID(disabled_id), tenant_cvr=NORDLYS, disabled_at=billing_clock.now()),
        UserGrantsChanged(
            user_id=uuid.UUID(narrowed_id),
            tenant_cvr=NORDLYS,
            grants=[{"cvr": NORDLYS, "accounts": [OIOUBL_ACCOUNT]}],
            functions=["invoices"],
            changed_at=billing_clock.now(),
        ),
    ):
        envelope = envelope_of(event, billing_clock)
        async with billing_db.transaction() as session:
            await handlers[type(event)](session, envelope)

    requests = [
        (f"/v1/invoices/{invoice_id}", {"Accept": "application/pdf"}, {}),
        (f"/v1/invoices/{invoice_id}", {"Accept": "application/xml"}, {}),
        (f"/v1/invoices/{invoice_id}/document", {}, {"format": "pdf"}),
        (f"/v1/invoices/{invoice_id}/document", {}, {"format": "peppol"}),
    ]
    planned = [(caller, *request) for caller in (disabled, narrowed) for request in requests] * 3
    answers = await asyncio.gather(
        *(
            reader.get(path, headers={**caller.headers, **headers}, params=params)
            for caller, path, headers, params in planned
        )
    )
    for (_, path, headers, params), answer in zip(planned, answers, strict=True):
        assert answer.status_code == 401, (path, headers, params, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


PROXIED = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"x-forwarded-for": "10.0.0.2, 203.0.113.7"},
    {"Forwarded": "for=203.0.113.7;proto=https"},
    {"X-Forwarded-For": ""},
]


async def test_the_internal_document_route_refuses_requests_through_the_reverse_proxy_even_with_the_token(
    reader: httpx.AsyncClient,
) -> None:
    """The notifier calls billing inside the platform's network; the reverse proxy in front of
    the APIs (which adds X-Forwarded-For or Forwarded) is how the internet reaches billing. A
    reader token that leaked must not open every company's invoices from there."""
    path = f"/internal/v1/invoices/{invoice_id_for(PAPER_ACCOUNT, OCTOBER)}/document"
    planned = [{**bearer(READER_TOKEN), **headers} for headers in PROXIED] * 3 + [bearer(READER_TOKEN)] * 3
    answers = await asyncio.gather(*(reader.get(path, headers=headers) for headers in planned))
    for headers, answer in zip(planned, answers, strict=True):
        if len(headers) == 1:
            assert answer.status_code == 200 and answer.content.startswith(b"%PDF-"), answer.text
            continue
        assert answer.status_code == 403, (headers, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert "inside the platform's network" in answer.json()["detail"]
        assert not answer.content.startswith(b"%PDF")


async def test_a_user_flooding_billing_with_document_requests_does_not_hold_up_the_notifiers_deliveries(
    reader: httpx.AsyncClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user may keep every render slot busy with long invoices asked for in parallel; the
    notifier's reads, which deliver every company's invoices, have slots of their own. Here
    the user's renders wait until the notifier has its document, which it only gets if it did
    not have to wait for them."""
    notifier_served = threading.Event()
    lock = threading.Lock()
    user_renders: list[bool] = []
    real_render_pdf = rendering.render_pdf

    def user_renders_wait_for_the_notifier(document: documents.InvoiceDocument) -> bytes:
        if document.account_number == PAPER_ACCOUNT:  # the user's; the notifier's is another
            with lock:
                user_renders.append(False)
            served = notifier_served.wait(timeout=20)  # a deadline: set once the notifier is served
            with lock:
                user_renders[user_renders.index(False)] = served
        return real_render_pdf(document)

    monkeypatch.setattr(rendering, "render_pdf", user_renders_wait_for_the_notifier)
    admin = tokens.group_admin()
    flood = [
        reader.get(f"/v1/invoices/{invoice_id_for(PAPER_ACCOUNT, OCTOBER)}/document", headers=admin.headers)
        for _ in range(6)
    ]

    async def notifier_reads() -> httpx.Response:
        # Once the user's requests hold the render slots they can take (two, by default).
        async def slots_taken() -> bool:
            return len(user_renders) >= 2

        await wait_until_async(slots_taken, deadline_s=20, what="the user's renders to take the slots")
        answer = await reader.get(
            f"/internal/v1/invoices/{invoice_id_for(OIOUBL_ACCOUNT, OCTOBER)}/document",
            headers=bearer(READER_TOKEN),
        )
        notifier_served.set()
        return answer

    *answers, notifier_answer = await asyncio.gather(*flood, notifier_reads())
    assert notifier_answer.status_code == 200 and notifier_answer.content.startswith(b"%PDF-")
    assert [answer.status_code for answer in answers] == [200] * 6
    assert len(user_renders) == 6 and all(user_renders), "the notifier's document waited behind the user's"
