"""Documents and CSV the portal passes on from billing are downloads, never pages of the
portal's own site (S8): an XML shown inline would be content of the portal's origin."""

from __future__ import annotations

import httpx

from services.portal.pages.billing_invoices import download_headers


def test_billing_s_attachment_and_its_file_name_are_passed_on() -> None:
    answer = httpx.Response(200, headers={"Content-Disposition": 'attachment; filename="faktura-202610-1.pdf"'})
    assert download_headers(answer, "fallback.pdf") == {
        "Content-Disposition": 'attachment; filename="faktura-202610-1.pdf"'
    }


def test_an_answer_without_a_disposition_or_an_inline_one_is_still_an_attachment() -> None:
    for answer in (
        httpx.Response(200),
        httpx.Response(200, headers={"Content-Disposition": 'inline; filename="faktura.xml"'}),
        httpx.Response(200, headers={"Content-Disposition": ""}),
    ):
        assert download_headers(answer, "usage.csv") == {"Content-Disposition": 'attachment; filename="usage.csv"'}
