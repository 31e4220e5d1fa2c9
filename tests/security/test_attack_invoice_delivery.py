"""Attacks on the notifier's delivery of invoice documents (S10): what billing (or whoever
answers at its address) sends back is taken only within bounds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from services.notifier.documents import BillingDocuments
from services.notifier.transports import PermanentDeliveryError

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
