"""Builds the notifier's parts once: the database, the outbox, the clock, the sealer, the token
verifier of the support API, the transports of each channel (e-Boks, SMTP, SMS, e-invoice, print,
billing's documents), the recorder of deliveries, the dispatcher and the deadline watch.

The API (`api.py`), the worker (`worker.py`), the CLI and the tests all get their parts here;
tests pass fakes through the keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx

from services.notifier.config import NotifierSettings
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.documents import BillingDocuments
from services.notifier.eboks import EboksTransport, HttpTransport, SpoolTransport
from services.notifier.email import SmtpTransport
from services.notifier.invoice_transports import (
    EinvoiceHttpTransport,
    EinvoiceSpool,
    EinvoiceTransport,
    PrintSpool,
)
from services.notifier.kinds import EmailTransport, Outlets, Sender, SmsTransport
from services.notifier.models import messaging
from services.notifier.recording import Recorder
from services.notifier.sla import SlaWatch
from services.notifier.sms import SmsGateway
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.sealing import Sealer
from shared.tokens import TokenVerifier

CHANNELS = ("eboks", "email", "sms", "einvoice", "print")


@dataclass(frozen=True)
class NotifierParts:
    settings: NotifierSettings
    clock: Clock
    db: Database
    outbox: Outbox
    sealer: Sealer
    verifier: TokenVerifier
    outlets: Outlets
    recorder: Recorder
    dispatcher: Dispatcher
    sla: SlaWatch


def build(
    settings: NotifierSettings,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
    sealer: Sealer | None = None,
    eboks: EboksTransport | None = None,
    email: EmailTransport | None = None,
    sms: SmsTransport | None = None,
    documents: BillingDocuments | None = None,
    einvoice: EinvoiceTransport | None = None,
    printer: PrintSpool | None = None,
) -> NotifierParts:
    """The notifier's parts from its settings; a transport given replaces the configured one."""
    clock = clock or settings.clock()
    db = Database(settings.db_url)
    outbox = Outbox(messaging, clock)
    sealer = sealer or settings.sealer()
    outlets = Outlets(
        sealer=sealer,
        sender=Sender(cvr=settings.operator_cvr, name=settings.operator_name, portal_url=settings.portal_address),
        eboks=eboks or eboks_transport(settings),
        email=email or smtp_transport(settings),
        email_from=settings.mail_sender,
        sms=sms or sms_gateway(settings),
        documents=documents or billing_documents(settings),
        einvoice=einvoice or einvoice_transport(settings),
        printer=printer or PrintSpool(settings.print_dir),
    )
    dispatcher = Dispatcher(
        db=db,
        outbox=outbox,
        clock=clock,
        sealer=outlets.sealer,
        sender=outlets.sender,
        eboks=outlets.eboks,
        email=outlets.email,
        email_from=outlets.email_from,
        sms=outlets.sms,
        documents=outlets.documents,
        einvoice=outlets.einvoice,
        printer=outlets.printer,
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base_s=settings.delivery_retry_base_s,
            max_s=settings.delivery_retry_max_s,
        ),
        lease={channel: timedelta(seconds=settings.lease_seconds(channel)) for channel in CHANNELS},
        concurrency=settings.delivery_concurrency,
    )
    return NotifierParts(
        settings=settings,
        clock=clock,
        db=db,
        outbox=outbox,
        sealer=sealer,
        verifier=settings.token_verifier(client=jwks_client),
        outlets=outlets,
        recorder=Recorder(clock, claims=dispatcher),
        dispatcher=dispatcher,
        sla=SlaWatch(db=db, outbox=outbox, clock=clock),
    )


def eboks_transport(settings: NotifierSettings) -> EboksTransport:
    """The contracted e-Boks endpoint over HTTP, or the spool (`ADGANG_NOTIFIER_EBOKS_TRANSPORT`)."""
    if settings.eboks_transport == "http":
        if not settings.eboks_http_url:
            raise ValueError("ADGANG_NOTIFIER_EBOKS_HTTP_URL is required for the http e-Boks transport")
        return HttpTransport(
            url=settings.eboks_http_url,
            client_cert=settings.eboks_client_cert,
            client_key=settings.eboks_client_key,
            ca_bundle=settings.eboks_ca_bundle,
            timeout=settings.eboks_http_timeout_s,
        )
    return SpoolTransport(settings.spool_dir)


def einvoice_transport(settings: NotifierSettings) -> EinvoiceTransport:
    """The access point over HTTP, or the spool (`ADGANG_NOTIFIER_EINVOICE_TRANSPORT`)."""
    if settings.einvoice_transport == "http":
        assert settings.einvoice_http_url is not None  # the settings require it
        return EinvoiceHttpTransport(
            url=settings.einvoice_http_url,
            token=settings.einvoice_http_token,
            client_cert=settings.einvoice_client_cert,
            client_key=settings.einvoice_client_key,
            ca_bundle=settings.einvoice_ca_bundle,
            timeout=settings.einvoice_http_timeout_s,
        )
    return EinvoiceSpool(settings.einvoice_dir)


def billing_documents(settings: NotifierSettings) -> BillingDocuments:
    return BillingDocuments(
        url=settings.billing_url,
        token=settings.billing_document_token,
        timeout=settings.billing_timeout_s,
        max_bytes=settings.billing_document_max_bytes,
    )


def smtp_transport(settings: NotifierSettings) -> SmtpTransport:
    return SmtpTransport(
        host=settings.smtp_host,
        port=settings.smtp_port,
        tls=settings.smtp_tls,
        username=settings.email_smtp_username,
        password=settings.email_smtp_password,
        timeout=settings.email_smtp_timeout_s,
    )


def sms_gateway(settings: NotifierSettings) -> SmsGateway:
    return SmsGateway(
        url=settings.sms_url,
        token=settings.sms_token,
        sender=settings.sms_sender,
        timeout=settings.sms_gateway_timeout_s,
    )
