"""What other services of the platform read from billing, with a bearer token of their own
(not a user's): the notifier fetches the documents it delivers (S10)."""

import hmac
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.billing.deps import DbDep, PartsDep
from services.billing.documents import DocumentFormat, load_document
from services.billing.invoices_api import DOCUMENT_RESPONSES, document_response
from services.billing.rendering import render_beside_the_loop
from services.billing.schemas import Id
from shared.problems import PROBLEM, Forbidden, NotFound, Unauthenticated

router = APIRouter(tags=["internal"], responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})


@router.get(
    "/internal/v1/invoices/{invoice_id}/document",
    summary="An invoice's document as issued, for the notifier's delivery (S10); "
    "Authorization: Bearer with the document reader token",
    response_class=Response,
    responses=DOCUMENT_RESPONSES,
)
async def read_document(
    request: Request,
    parts: PartsDep,
    db: DbDep,
    invoice_id: Id,
    format: Annotated[DocumentFormat, Query(description="pdf, oioubl or peppol")] = "pdf",
) -> Response:
    token = parts.document_reader_token
    if token is None:
        raise NotFound(
            "internal document reading is not enabled: set ADGANG_BILLING_DOCUMENT_READER_TOKEN "
            "on billing to let the notifier read invoice documents."
        )
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        # Only the reverse proxy in front of the APIs adds these, and through it the internet
        # reaches billing: a reader token that leaked must not open every company's invoices
        # from there. The notifier calls billing directly (ADGANG_NOTIFIER_BILLING_URL).
        raise Forbidden(
            "Invoice documents are read on this path only inside the platform's network, not "
            "through the reverse proxy: point ADGANG_NOTIFIER_BILLING_URL at billing directly."
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Constant time, so the answer's timing does not tell how much of a guess was right.
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())):
        raise Unauthenticated(
            "Send billing's document reader token as 'Authorization: Bearer <token>' "
            "(ADGANG_BILLING_DOCUMENT_READER_TOKEN)."
        )
    async with db.reading() as session:
        document = await load_document(session, invoice_id)
    if document is None:
        raise NotFound(f"There is no invoice {invoice_id}.")
    return document_response(await render_beside_the_loop(document, format, parts.notifier_renders))
