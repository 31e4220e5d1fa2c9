"""E-invoices (OIOUBL, Peppol) reach the buyer's endpoint once per invoice, however often we
try (S10): the spool writes each invoice's file once, the access point recognises an invoice
it has by its `Idempotency-Key`. The access point here is a real HTTP server in this process,
like the e-Boks endpoint in test_eboks_transports.py."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import SecretStr

from services.notifier.invoice_transports import (
    EinvoiceHttpTransport,
    EinvoiceSpool,
    EinvoiceTransport,
    PrintSpool,
)
from services.notifier.transport_base import PermanentDeliveryError, TransientDeliveryError
from tests.integration.test_eboks_transports import (
    FakeEboksEndpoint,
    RecordedSleeps,
    RunningServer,
    everything_under,
    file_bytes,
    file_identity,
    start_server,
)

GLN = "5790000435951"
PEPPOL = "0088:5790000435951"


@pytest.fixture
def access_point() -> Iterator[RunningServer]:
    yield from start_server(FakeEboksEndpoint())


# --- spools ---------------------------------------------------------------------------------


async def test_the_spool_writes_each_invoice_once_under_its_format_and_endpoint(tmp_path: Path) -> None:
    spool: EinvoiceTransport = EinvoiceSpool(tmp_path)
    invoice_id = uuid4()

    first = await spool.deliver(format="peppol", endpoint=PEPPOL, invoice_id=invoice_id, document=b"<Invoice/>")
    before = file_identity(first.location)
    again = await spool.deliver(format="peppol", endpoint=PEPPOL, invoice_id=invoice_id, document=b"<other/>")

    assert Path(first.location) == tmp_path / "peppol" / PEPPOL / f"{invoice_id}.xml"
    assert not first.already_delivered and again.already_delivered and again.location == first.location
    assert file_bytes(first.location) == b"<Invoice/>"
    assert file_identity(first.location) == before


async def test_racing_spoolings_of_one_invoice_leave_one_complete_file(tmp_path: Path) -> None:
    spools = [EinvoiceSpool(tmp_path), EinvoiceSpool(tmp_path)]  # two notifier processes
    invoice_id = uuid4()
    documents = [f"<Invoice n='{n}'>{'x' * 50_000}</Invoice>".encode() for n in range(20)]

    receipts = await asyncio.gather(
        *(
            spools[n % 2].deliver(format="oioubl", endpoint=GLN, invoice_id=invoice_id, document=documents[n])
            for n in range(20)
        )
    )

    [winner] = [n for n, receipt in enumerate(receipts) if not receipt.already_delivered]
    assert os.listdir(tmp_path / "oioubl" / GLN) == [f"{invoice_id}.xml"]  # no temp files left
    assert file_bytes(tmp_path / "oioubl" / GLN / f"{invoice_id}.xml") == documents[winner]


@pytest.mark.parametrize(
    ("format", "endpoint"),
    [
        ("oioubl", "../../etc"),
        ("oioubl", "579000043595"),
        ("oioubl", PEPPOL),
        ("peppol", "0088:../x"),
        ("peppol", "0088/5790000435951"),
        ("peppol", GLN),
        ("peppol", "0088:"),
        ("paper", GLN),
    ],
)
async def test_an_endpoint_that_is_not_one_of_its_format_is_refused_and_nothing_written(
    tmp_path: Path, format: str, endpoint: str
) -> None:
    spool = EinvoiceSpool(tmp_path / "spool")

    with pytest.raises(PermanentDeliveryError, match="is not"):
        await spool.deliver(format=format, endpoint=endpoint, invoice_id=uuid4(), document=b"<x/>")  # type: ignore[arg-type]

    assert everything_under(tmp_path) == []


async def test_the_print_spool_writes_each_invoice_once_and_lists_them_oldest_first(tmp_path: Path) -> None:
    printer = PrintSpool(tmp_path)
    older, newer = uuid4(), uuid4()

    await printer.deliver(invoice_id=newer, document=b"%PDF newer")
    first = await printer.deliver(invoice_id=older, document=b"%PDF older")
    again = await printer.deliver(invoice_id=older, document=b"%PDF changed")
    os.utime(tmp_path / f"{older}.pdf", ns=(1_000_000_000, 1_000_000_000))

    assert not first.already_delivered and again.already_delivered
    assert file_bytes(tmp_path / f"{older}.pdf") == b"%PDF older"
    assert printer.list_invoices() == [tmp_path / f"{older}.pdf", tmp_path / f"{newer}.pdf"]


# --- the access point over HTTP ---------------------------------------------------------------


async def test_an_e_invoice_is_posted_as_xml_with_its_invoice_id_format_and_endpoint(
    access_point: RunningServer,
) -> None:
    invoice_id = uuid4()
    async with EinvoiceHttpTransport(url=access_point.url, token=SecretStr("ap-token")) as transport:
        receipt = await transport.deliver(format="peppol", endpoint=PEPPOL, invoice_id=invoice_id, document=b"<Invoice/>")

    assert receipt.message_uuid == invoice_id and not receipt.already_delivered
    [posted] = access_point.endpoint.received
    assert posted.body == b"<Invoice/>"
    assert posted.headers["content-type"] == "application/xml"
    assert posted.headers["idempotency-key"] == str(invoice_id)
    assert posted.headers["x-document-format"] == "peppol"
    assert posted.headers["x-recipient-endpoint"] == PEPPOL
    assert posted.headers["authorization"] == "Bearer ap-token"


async def test_an_invoice_the_access_point_already_has_counts_as_delivered(access_point: RunningServer) -> None:
    access_point.endpoint.answer_with(409)
    async with EinvoiceHttpTransport(url=access_point.url) as transport:
        receipt = await transport.deliver(format="oioubl", endpoint=GLN, invoice_id=uuid4(), document=b"<x/>")

    assert receipt.already_delivered
    assert len(access_point.endpoint.received) == 1
    assert "authorization" not in access_point.endpoint.received[0].headers


async def test_unavailable_and_busy_answers_are_retried_with_the_same_idempotency_key(
    access_point: RunningServer,
) -> None:
    access_point.endpoint.answer_with(503, (429, {"retry-after": "2"}), 502)
    sleeps = RecordedSleeps()
    invoice_id = uuid4()
    async with EinvoiceHttpTransport(url=access_point.url, sleep=sleeps, backoff_max=8.0) as transport:
        receipt = await transport.deliver(format="oioubl", endpoint=GLN, invoice_id=invoice_id, document=b"<x/>")

    assert not receipt.already_delivered
    assert [r.headers["idempotency-key"] for r in access_point.endpoint.received] == [str(invoice_id)] * 4
    assert len(sleeps.delays) == 3 and sleeps.delays[1] == 2.0


async def test_a_refused_invoice_fails_permanently_without_retry(access_point: RunningServer) -> None:
    access_point.endpoint.answer_with(422)
    sleeps = RecordedSleeps()
    async with EinvoiceHttpTransport(url=access_point.url, sleep=sleeps) as transport:
        with pytest.raises(PermanentDeliveryError, match="422") as raised:
            await transport.deliver(format="peppol", endpoint=PEPPOL, invoice_id=uuid4(), document=b"<x/>")

    assert raised.value.status_code == 422
    assert "status 422" in str(raised.value)  # the access point's own words, for the operator
    assert len(access_point.endpoint.received) == 1 and sleeps.delays == []


async def test_an_access_point_that_stays_unavailable_fails_transiently_after_max_attempts(
    access_point: RunningServer,
) -> None:
    access_point.endpoint.answer_with(*[500] * 10)
    sleeps = RecordedSleeps()
    async with EinvoiceHttpTransport(url=access_point.url, sleep=sleeps, max_attempts=3, backoff_max=0.5) as transport:
        with pytest.raises(TransientDeliveryError, match="after 3 attempts"):
            await transport.deliver(format="oioubl", endpoint=GLN, invoice_id=uuid4(), document=b"<x/>")

    assert len(access_point.endpoint.received) == 3


async def test_an_access_point_nobody_listens_on_fails_transiently() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with EinvoiceHttpTransport(
        url=f"http://127.0.0.1:{closed_port}/invoices", sleep=RecordedSleeps(), max_attempts=2
    ) as transport:
        with pytest.raises(TransientDeliveryError, match="ConnectError"):
            await transport.deliver(format="oioubl", endpoint=GLN, invoice_id=uuid4(), document=b"<x/>")


async def test_an_endpoint_of_the_wrong_format_is_refused_before_anything_is_posted(
    access_point: RunningServer,
) -> None:
    async with EinvoiceHttpTransport(url=access_point.url) as transport:
        with pytest.raises(PermanentDeliveryError, match="Peppol participant"):
            await transport.deliver(format="peppol", endpoint=GLN, invoice_id=uuid4(), document=b"<x/>")

    assert access_point.endpoint.received == []
