"""Attacks on the notifier's delivery of invoice documents (S10): what billing (or whoever
answers at its address) sends back is taken only within bounds, and an invoice announced again
with another delivery is not delivered a second time."""

# ruff: noqa: F811 - fixtures are imported from test_invoice_delivery and used by name

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from services.notifier.documents import BillingDocuments
from services.notifier.sinks import read_mail
from services.notifier.transport_base import PermanentDeliveryError
from shared.events import InvoiceDelivery
from tests.integration.test_invoice_delivery import (  # noqa: F401 - fixtures
    OIOUBL,
    PAPER,
    PDF_EMAIL,
    BillingStandIn,
    Notifier,
    billing,
    database_url,
    issued,
    mail_root,
    notifier,
    spooled,
)

MIB = 1024 * 1024
TOKEN = SecretStr("document-reader-" + "x" * 32)


class EndlessPdf:
    """An answer at billing's address that sends PDF bytes for as long as it is read, up to
    `chunks` MiB; it counts how much was taken from it."""

    def __init__(self, chunks: int = 64, *, declare_length: bool = False) -> None:
        self.chunks = chunks
        self.declare_length = declare_length
        self.sent = 0

    async def body(self) -> AsyncIterator[bytes]:
        yield b"%PDF-1.7\n"
        for _ in range(self.chunks):
            self.sent += 1
            yield b"0" * MIB

    def handler(self, request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/pdf"}
        if self.declare_length:
            headers["content-length"] = str(self.chunks * MIB + 9)
        return httpx.Response(200, headers=headers, content=self.body())


@pytest.mark.parametrize("declare_length", [False, True], ids=["chunked", "with-content-length"])
async def test_a_document_larger_than_the_limit_fails_without_being_read_whole_even_fetched_in_parallel(
    declare_length: bool,
) -> None:
    """Billing's PDFs are a few MiB at most; whoever answers at its address with more (a wrong
    BILLING_URL, a proxy's error page streamed forever) must not fill the notifier's memory."""
    answers = [EndlessPdf(declare_length=declare_length) for _ in range(3)]

    async def fetch(answer: EndlessPdf) -> BaseException | bytes:
        documents = BillingDocuments(
            url="http://billing.test",
            token=TOKEN,
            transport=httpx.MockTransport(answer.handler),
        )
        async with documents:
            try:
                return await documents.fetch(uuid.uuid4(), "pdf")
            except PermanentDeliveryError as exc:
                return exc

    results = await asyncio.gather(*(fetch(answer) for answer in answers))
    for answer, result in zip(answers, results, strict=True):
        assert isinstance(result, PermanentDeliveryError), "the whole oversized document was taken"
        assert "20 MiB" in str(result) and "ADGANG_NOTIFIER_BILLING_DOCUMENT_MAX_BYTES" in str(result)
        assert answer.sent <= 21  # read no further than past the limit (the default, 20 MiB)


async def test_a_document_within_the_limit_is_taken_whole() -> None:
    answer = EndlessPdf(chunks=3)
    async with BillingDocuments(
        url="http://billing.test", token=TOKEN, max_bytes=8 * MIB, transport=httpx.MockTransport(answer.handler)
    ) as documents:
        pdf = await documents.fetch(uuid.uuid4(), "pdf")
    assert pdf.startswith(b"%PDF-") and len(pdf) == 3 * MIB + 9


@pytest.mark.parametrize("first", [OIOUBL, PAPER, PDF_EMAIL], ids=["oioubl", "paper", "pdf_email"])
async def test_an_invoice_announced_again_with_another_delivery_is_delivered_once_as_first_announced(
    notifier: Notifier, billing: BillingStandIn, mail_root: tuple, first: InvoiceDelivery
) -> None:
    """An issued invoice's delivery never changes (billing keeps it in the invoice's snapshot),
    so an InvoiceIssued for the same invoice with another delivery is a forgery or a mistake:
    mailing the invoice's PDF to the address it names would send the company's invoice to a
    stranger. The copies arrive at once, at two workers; one delivery, as first announced."""
    invoice = issued(first)
    billing.issue(invoice)
    await notifier.receive(invoice)
    stranger = InvoiceDelivery(format="pdf_email", email="stranger@evil.example")
    others = [
        invoice.model_copy(update={"delivery": delivery})
        for delivery in (stranger, OIOUBL, PAPER, PDF_EMAIL)
        if delivery != first
    ]
    other_worker = notifier.restarted()
    await asyncio.gather(*(worker.receive(copy) for worker, copy in zip([notifier, other_worker, notifier], others, strict=True)))

    [delivery] = await notifier.deliveries()
    assert delivery.kind == f"invoice_{first.format}"
    await notifier.dispatcher.dispatch_due()
    assert read_mail(mail_root[0], "stranger@evil.example") == []
    expected_mail = 1 if first.format == "pdf_email" else 0
    assert len(read_mail(mail_root[0], "bogholderi@solsikke.example.dk")) == expected_mail
    assert len(spooled(notifier)) == 1 - expected_mail
