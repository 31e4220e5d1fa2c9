"""An issued invoice's document is delivered as the account chose when it was issued (S10): the
PDF by email with the document attached, OIOUBL and Peppol to the e-invoice spool, paper to
the print spool; once at the receiver, however often the event comes or the notifier restarts.

Events go through the worker's own subscriptions and idempotent consumer; mail goes over SMTP
to the local mail sink; the documents come from an in-process stand-in of billing's one
internal document route (the end-to-end test uses the real billing)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.notifier.bootstrap import build
from services.notifier.config import NotifierSettings
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.documents import BillingDocuments
from services.notifier.eboks import SpoolTransport
from services.notifier.email import SmtpTransport, parse_mailbox
from services.notifier.invoice_transports import EinvoiceSpool, PrintSpool
from services.notifier.kinds import Sender
from services.notifier.models import Delivery, messaging
from services.notifier.sinks import MailSink, read_mail
from services.notifier.worker import handlers
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import encode, new_event_id
from shared.events import InvoiceDelivery, InvoiceIssued
from shared.messaging import ConsumedMessage, IdempotentConsumer, Outbox, by_topic
from shared.sealing import Sealer
from tests.support.dead_letters import NoDeadLetters
from tests.support.ports import free_ports

CVR = "22109340"
ACCOUNT = "10020030"
TOKEN = "a-document-token-both-know"
PORTAL = "https://selvbetjening.example.dk/"
FROM = parse_mailbox("Adgang Erhverv <faktura@adgang.example.dk>")
BILLING = "http://billing.internal"
GLN = "5790000435951"
PEPPOL = InvoiceDelivery(format="peppol", peppol_scheme="0184", peppol_id="DK22109340")
OIOUBL = InvoiceDelivery(format="oioubl", gln=GLN)
PDF_EMAIL = InvoiceDelivery(format="pdf_email", email="bogholderi@solsikke.example.dk")
PAPER = InvoiceDelivery(format="paper")


@dataclass
class BillingStandIn:
    """Billing's `GET /internal/v1/invoices/{id}/document?format=`, as the contract between
    billing and the notifier says it answers; `down` makes every connection fail."""

    documents: dict[tuple[str, str], bytes] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    def issue(self, invoice: InvoiceIssued) -> dict[str, bytes]:
        """Billing's documents of the invoice: a PDF, and the XML for its buyer's endpoint."""
        pdf = b"%PDF-1.7\n" + f"Faktura {invoice.invoice_number} {invoice.invoice_id}".encode() + b"\n%%EOF\n"
        made = {"pdf": pdf}
        if invoice.delivery is not None and invoice.delivery.format in ("oioubl", "peppol"):
            made[invoice.delivery.format] = f"<Invoice><ID>{invoice.invoice_number}</ID></Invoice>".encode()
        for format, content in made.items():
            self.documents[(str(invoice.invoice_id), format)] = content
        return made

    def app(self) -> Starlette:
        async def document(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return _problem(401, "a valid bearer token is required")
            invoice_id, format = request.path_params["invoice_id"], request.query_params.get("format", "")
            self.asked.append((invoice_id, format))
            if not any(known == invoice_id for known, _ in self.documents):
                return _problem(404, f"there is no invoice {invoice_id}")
            content = self.documents.get((invoice_id, format))
            if content is None:
                return _problem(409, f"invoice {invoice_id} has no buyer endpoint for {format}", "format-not-available")
            media_type = "application/pdf" if format == "pdf" else "application/xml"
            return Response(content, media_type=media_type)

        return Starlette(routes=[Route("/internal/v1/invoices/{invoice_id}/document", document)])

    def transport(self) -> httpx.AsyncBaseTransport:
        stand_in = self

        class Switchable(httpx.AsyncBaseTransport):
            inner = httpx.ASGITransport(app=self.app())

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if stand_in.down:
                    raise httpx.ConnectError("connection refused", request=request)
                return await self.inner.handle_async_request(request)

        return Switchable()


def _problem(status: int, detail: str, kind: str = "about:blank") -> JSONResponse:
    return JSONResponse(
        {"type": kind, "title": "refused", "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


class Notifier:
    """The notifier worker's consumers and dispatcher over one database and its spools, minus
    Kafka; `restarted()` is a new one over the same database and directories."""

    def __init__(
        self,
        db: Database,
        clock: FrozenClock,
        sealer: Sealer,
        root: Path,
        billing: BillingStandIn,
        smtp_port: int,
        *,
        token: str = TOKEN,
    ) -> None:
        self.db, self.clock, self.sealer, self.root = db, clock, sealer, root
        self.billing, self.smtp_port = billing, smtp_port
        self.einvoices = EinvoiceSpool(root / "einvoice")
        self.printer = PrintSpool(root / "print")
        self.documents = BillingDocuments(url=BILLING, token=SecretStr(token), transport=billing.transport())
        self._consumers = {
            topic.name: IdempotentConsumer(
                name=f"notifier:{topic.name}",
                db=db,
                tables=messaging,
                handlers=topic_handlers,
                dead_letters=NoDeadLetters(),
                clock=clock,
                retries=0,
                backoff=0,
            )
            for topic, topic_handlers in by_topic(
                handlers(build(NotifierSettings(database_url=db.url, var_dir=root), clock=clock, sealer=sealer))
            ).items()
        }
        self.dispatcher = Dispatcher(
            db=db,
            outbox=Outbox(messaging, clock),
            clock=clock,
            sealer=sealer,
            eboks=SpoolTransport(root / "eboks"),
            sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url=PORTAL),
            email=SmtpTransport(host="127.0.0.1", port=smtp_port, tls="none"),
            email_from=FROM,
            documents=self.documents,
            einvoice=self.einvoices,
            printer=self.printer,
            retry=RetryPolicy(max_attempts=3, base_s=2, max_s=60),
            lease=timedelta(seconds=60),
        )

    def restarted(self) -> Notifier:
        return Notifier(self.db, self.clock, self.sealer, self.root, self.billing, self.smtp_port)

    async def receive(self, event: InvoiceIssued, *, event_id: str | None = None) -> str:
        record = encode(event, event_id=event_id or new_event_id(), time=self.clock.now())
        return await self._consumers[record.topic].process(
            ConsumedMessage(topic=record.topic, key=record.key, value=record.value, headers=record.headers)
        )

    async def deliveries(self, kind_prefix: str = "invoice_") -> list[Delivery]:
        async with self.db.transaction() as session:
            rows = await session.scalars(select(Delivery).where(Delivery.kind.startswith(kind_prefix)))
            return [row for row in rows if row.kind != "invoice_ready"]

    async def outcomes(self) -> list[dict[str, Any]]:
        """The delivery events in the outbox: type and payload."""
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(messaging.outbox.c.headers, messaging.outbox.c.value).order_by(messaging.outbox.c.seq)
                )
            ).all()
        return [
            {"type": dict(json.loads(headers))["ce_type"].split(".")[-2], **json.loads(value)}
            for headers, value in rows
        ]


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


@pytest.fixture
async def mail_root(tmp_path: Path) -> AsyncIterator[tuple[Path, int]]:
    [port] = free_ports(1)
    sink = MailSink(tmp_path / "sinks", port=port)
    await sink.start()
    yield tmp_path / "sinks", port
    await sink.stop()


@pytest.fixture
def billing() -> BillingStandIn:
    return BillingStandIn()


@pytest.fixture
def notifier(db, clock, sealer, tmp_path: Path, billing: BillingStandIn, mail_root) -> Notifier:
    return Notifier(db, clock, sealer, tmp_path, billing, mail_root[1])


def issued(delivery: InvoiceDelivery | None, *, language: str = "da", number: str = "2026-004711") -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number=number,
        cvr=CVR,
        company_name="Bageriet Solsikke ApS",
        account_number=ACCOUNT,
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        issued_on=date(2026, 2, 1),
        due_on=date(2026, 2, 15),
        amount_excl_vat_ore=99_600,
        vat_ore=24_900,
        amount_incl_vat_ore=124_500,
        delivery=delivery,
        language=language,  # type: ignore[arg-type]
    )


def spooled(notifier: Notifier) -> list[Path]:
    return sorted(path for path in notifier.root.rglob("*") if path.is_file() and path.suffix in (".xml", ".pdf"))


def file_identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


# --- each format, once ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "folder"),
    [(OIOUBL, Path("einvoice", "oioubl", GLN)), (PEPPOL, Path("einvoice", "peppol", "0184:DK22109340"))],
    ids=["oioubl", "peppol"],
)
async def test_an_e_invoice_is_spooled_once_as_billing_rendered_it(
    notifier: Notifier, billing: BillingStandIn, delivery: InvoiceDelivery, folder: Path
) -> None:
    invoice = issued(delivery)
    documents = billing.issue(invoice)
    assert await notifier.receive(invoice) == "handled"

    assert await notifier.dispatcher.dispatch_due() == 1

    path = notifier.root / folder / f"{invoice.invoice_id}.xml"
    assert spooled(notifier) == [path]
    assert path.read_bytes() == documents[delivery.format]
    [record] = await notifier.deliveries()
    assert (record.kind, record.channel, record.status, record.location) == (
        f"invoice_{delivery.format}", "einvoice", "delivered", str(path)
    )
    assert record.recipient == (GLN if delivery.format == "oioubl" else "0184:DK22109340")
    [outcome] = [o for o in await notifier.outcomes()]
    assert outcome["type"] == "DeliverySucceeded"
    assert (outcome["channel"], outcome["recipient"], outcome["attempts"]) == ("einvoice", record.recipient, 1)
    assert billing.asked == [(str(invoice.invoice_id), delivery.format)]


async def test_an_invoice_on_paper_is_spooled_once_as_a_pdf_for_the_print_provider(
    notifier: Notifier, billing: BillingStandIn
) -> None:
    invoice = issued(PAPER)
    documents = billing.issue(invoice)
    await notifier.receive(invoice)

    await notifier.dispatcher.dispatch_due()

    path = notifier.root / "print" / f"{invoice.invoice_id}.pdf"
    assert spooled(notifier) == [path]
    assert path.read_bytes() == documents["pdf"]
    assert notifier.printer.list_invoices() == [path]
    [record] = await notifier.deliveries()
    assert (record.kind, record.channel, record.recipient, record.status) == ("invoice_paper", "print", CVR, "delivered")


@pytest.mark.parametrize(
    ("language", "filename", "subject"),
    [("da", "faktura-2026-004711.pdf", "Faktura 2026-004711 fra Adgang Erhverv"),
     ("en", "invoice-2026-004711.pdf", "Invoice 2026-004711 from Adgang Erhverv")],
)
async def test_a_pdf_email_carries_billings_pdf_as_an_attachment_in_the_companys_language(
    notifier: Notifier, billing: BillingStandIn, mail_root: tuple[Path, int], language: str, filename: str, subject: str
) -> None:
    invoice = issued(PDF_EMAIL, language=language)
    documents = billing.issue(invoice)
    await notifier.receive(invoice)

    await notifier.dispatcher.dispatch_due()

    [mail] = read_mail(mail_root[0], "bogholderi@solsikke.example.dk")
    assert mail.subject == subject
    assert "2026-004711" in mail.text and ("1.245,00 kr." if language == "da" else "DKK 1,245.00") in mail.text
    [attachment] = mail.attachments
    assert (attachment.filename, attachment.content_type) == (filename, "application/pdf")
    assert attachment.content == documents["pdf"]
    [record] = await notifier.deliveries()
    assert (record.kind, record.channel, record.status) == ("invoice_pdf_email", "email", "delivered")
    assert mail.message_id == f"<{record.message_id}@adgang.example.dk>"
    assert spooled(notifier) == []


async def test_an_invoice_issued_before_documents_were_delivered_gets_only_the_emails(
    notifier: Notifier, billing: BillingStandIn
) -> None:
    invoice = issued(None)
    billing.issue(invoice)
    await notifier.receive(invoice)

    assert await notifier.dispatcher.dispatch_due() == 0
    assert await notifier.deliveries() == [] and spooled(notifier) == [] and billing.asked == []


# --- exactly once ----------------------------------------------------------------------------


async def test_a_redelivered_event_and_a_restarted_notifier_deliver_each_format_once(
    notifier: Notifier, billing: BillingStandIn, mail_root: tuple[Path, int]
) -> None:
    invoices = [issued(d, number=f"2026-00{n}") for n, d in enumerate((OIOUBL, PEPPOL, PAPER, PDF_EMAIL))]
    for invoice in invoices:
        billing.issue(invoice)
    event_ids = [new_event_id() for _ in invoices]
    for invoice, event_id in zip(invoices, event_ids, strict=True):
        await notifier.receive(invoice, event_id=event_id)
    # Two workers at once: each delivery is claimed by one of them.
    other = notifier.restarted()
    handled = await asyncio.gather(notifier.dispatcher.dispatch_due(), other.dispatcher.dispatch_due())
    assert sum(handled) == 4
    files = {path: file_identity(path) for path in spooled(notifier)}
    assert len(files) == 3

    restarted = notifier.restarted()
    # The same events again past the inbox (new event ids: billing announcing them again) and as they were.
    for invoice, event_id in zip(invoices, event_ids, strict=True):
        assert await restarted.receive(invoice, event_id=event_id) == "duplicate"
        assert await restarted.receive(invoice) == "handled"
    assert await restarted.dispatcher.dispatch_due() == 0

    assert {path: file_identity(path) for path in spooled(notifier)} == files
    assert len(read_mail(mail_root[0], "bogholderi@solsikke.example.dk")) == 1
    assert len(await notifier.deliveries()) == 4
    assert [o["type"] for o in await notifier.outcomes()] == ["DeliverySucceeded"] * 4


async def test_a_delivery_handed_over_before_a_crash_is_not_handed_over_again(
    notifier: Notifier, billing: BillingStandIn, mail_root: tuple[Path, int]
) -> None:
    invoices = [issued(d) for d in (OIOUBL, PAPER, PDF_EMAIL)]
    for invoice in invoices:
        billing.issue(invoice)
        await notifier.receive(invoice)
    await notifier.dispatcher.dispatch_due()
    files = {path: file_identity(path) for path in spooled(notifier)}
    # The worker died after handing them over and before recording it: they are due again.
    async with notifier.db.transaction() as session:
        for row in await session.scalars(select(Delivery)):
            row.status, row.delivered_at = "pending", None

    assert await notifier.restarted().dispatcher.dispatch_due() == 3

    assert {path: file_identity(path) for path in spooled(notifier)} == files
    assert len(read_mail(mail_root[0], "bogholderi@solsikke.example.dk")) == 1
    assert {d.status for d in await notifier.deliveries()} == {"delivered"}


async def test_a_format_changed_after_issue_leaves_that_invoice_as_it_was_issued(
    notifier: Notifier, billing: BillingStandIn, mail_root: tuple[Path, int]
) -> None:
    first = issued(OIOUBL, number="2026-000001")
    billing.issue(first)
    await notifier.receive(first)
    # The account changes to PDF by email before the first invoice is delivered (billing
    # could render the first as a PDF too); the next invoice is issued with that choice.
    second = issued(PDF_EMAIL, number="2026-000002")
    billing.issue(second)
    await notifier.receive(second)

    await notifier.dispatcher.dispatch_due()

    assert [p.name for p in spooled(notifier)] == [f"{first.invoice_id}.xml"]
    [mail] = read_mail(mail_root[0], "bogholderi@solsikke.example.dk")
    assert "2026-000002" in mail.subject and "2026-000001" not in mail.text
    assert sorted(d.kind for d in await notifier.deliveries()) == ["invoice_oioubl", "invoice_pdf_email"]


# --- billing's answers -----------------------------------------------------------------------


async def test_billing_down_is_retried_after_a_backoff_and_then_delivered(
    notifier: Notifier, billing: BillingStandIn
) -> None:
    invoice = issued(PEPPOL)
    documents = billing.issue(invoice)
    await notifier.receive(invoice)
    billing.down = True

    assert await notifier.dispatcher.dispatch_due() == 1
    [waiting] = await notifier.deliveries()
    assert waiting.status == "pending" and waiting.attempts == 1
    assert "billing did not answer" in (waiting.last_error or "") and "ConnectError" in (waiting.last_error or "")
    assert spooled(notifier) == []
    billing.down = False
    assert await notifier.dispatcher.dispatch_due() == 0, "the retry waits for its backoff"

    notifier.clock.advance(timedelta(seconds=2))
    assert await notifier.dispatcher.dispatch_due() == 1

    [delivered] = await notifier.deliveries()
    assert delivered.status == "delivered" and delivered.attempts == 2
    [path] = spooled(notifier)
    assert path.read_bytes() == documents["peppol"]
    assert [o["type"] for o in await notifier.outcomes()] == ["DeliverySucceeded"]


async def test_an_invoice_billing_does_not_know_fails_at_once_with_billings_reason(
    notifier: Notifier, billing: BillingStandIn
) -> None:
    invoice = issued(PAPER)  # never issued by the stand-in
    await notifier.receive(invoice)

    await notifier.dispatcher.dispatch_due()

    [failed] = await notifier.deliveries()
    assert failed.status == "failed" and failed.attempts == 1
    assert "HTTP 404" in (failed.last_error or "") and f"there is no invoice {invoice.invoice_id}" in (failed.last_error or "")
    [outcome] = await notifier.outcomes()
    assert outcome["type"] == "DeliveryFailed" and "HTTP 404" in outcome["reason"]
    assert spooled(notifier) == []


async def test_a_format_billing_cannot_render_for_the_invoice_fails_with_billings_reason(
    notifier: Notifier, billing: BillingStandIn
) -> None:
    invoice = issued(OIOUBL)
    billing.issue(invoice.model_copy(update={"delivery": PAPER}))  # billing has only the PDF

    await notifier.receive(invoice)
    await notifier.dispatcher.dispatch_due()

    [failed] = await notifier.deliveries()
    assert failed.status == "failed"
    assert "HTTP 409" in (failed.last_error or "") and "no buyer endpoint for oioubl" in (failed.last_error or "")


async def test_a_wrong_document_token_is_retried_for_the_operator_to_mend(
    db, clock, sealer, tmp_path: Path, billing: BillingStandIn, mail_root: tuple[Path, int]
) -> None:
    notifier = Notifier(db, clock, sealer, tmp_path, billing, mail_root[1], token="not-the-token")
    invoice = issued(PAPER)
    billing.issue(invoice)
    await notifier.receive(invoice)

    await notifier.dispatcher.dispatch_due()

    [waiting] = await notifier.deliveries()
    assert waiting.status == "pending" and "HTTP 401" in (waiting.last_error or "")
    assert "ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN" in (waiting.last_error or "")
