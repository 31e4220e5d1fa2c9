"""Notifier's worker: records deliveries from events (letters, one-time codes, order and invoice
emails, invoice documents), keeps the recipient directory, dispatches deliveries by channel, watches deadlines."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import faust

from services.notifier import directory
from services.notifier.config import NotifierSettings
from services.notifier.documents import BillingDocuments
from services.notifier.email import SmtpTransport
from services.notifier.invoice_transports import (
    EinvoiceHttpTransport,
    EinvoiceSpool,
    EinvoiceTransport,
    PrintSpool,
)
from services.notifier.models import messaging
from services.notifier.service import (
    Dispatcher,
    RetryPolicy,
    Sender,
    SlaWatch,
    record_code,
    record_credential_changed,
    record_credentials,
    record_invoice_issued,
    record_login_created,
    record_order_confirmation,
    record_takeover_completed,
    record_takeover_notice,
)
from services.notifier.sms import SmsGateway
from services.notifier.transports import EboksTransport, HttpTransport, SpoolTransport
from shared.clock import Clock
from shared.db import Database
from shared.events import (
    CredentialChanged,
    CredentialsIssued,
    InvoiceIssued,
    LoginCreated,
    OtpRequested,
    SubscriptionOrdered,
    SubscriptionUpgraded,
    TakeoverCompleted,
    TakeoverNoticeIssued,
    UserCreated,
    UserDeleted,
    UserDetailsChanged,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from shared.messaging import Handlers, Outbox
from shared.worker import Background, WorkerSpec, build_faust_app, periodic


def eboks_transport(settings: NotifierSettings) -> EboksTransport:
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


def handlers(clock: Clock) -> Handlers:
    """What the worker consumes: the handler of each event class."""
    return {
        CredentialsIssued: partial(record_credentials, clock=clock),
        LoginCreated: partial(record_login_created, clock=clock),
        TakeoverNoticeIssued: partial(record_takeover_notice, clock=clock),
        OtpRequested: partial(record_code, clock=clock),
        CredentialChanged: partial(record_credential_changed, clock=clock),
        UserCreated: directory.on_user_created,
        UserGrantsChanged: directory.on_user_grants_changed,
        UserDetailsChanged: directory.on_user_details_changed,
        UserDisabled: directory.on_user_disabled,
        UserEnabled: directory.on_user_enabled,
        UserDeleted: directory.on_user_deleted,
        TakeoverCompleted: partial(record_takeover_completed, clock=clock),
        SubscriptionOrdered: partial(record_order_confirmation, clock=clock),
        SubscriptionUpgraded: partial(record_order_confirmation, clock=clock),
        InvoiceIssued: partial(record_invoice_issued, clock=clock),
    }


def create_worker(settings: NotifierSettings | None = None, *, clock: Clock | None = None) -> faust.App:
    settings = settings or NotifierSettings()
    clock = clock or settings.clock()
    db = Database(settings.db_url)
    outbox = Outbox(messaging, clock)
    dispatcher = Dispatcher(
        db=db,
        outbox=outbox,
        clock=clock,
        sealer=settings.sealer(),
        eboks=eboks_transport(settings),
        email=smtp_transport(settings),
        email_from=settings.mail_sender,
        sms=sms_gateway(settings),
        documents=billing_documents(settings),
        einvoice=einvoice_transport(settings),
        printer=PrintSpool(settings.print_dir),
        sender=Sender(
            cvr=settings.operator_cvr, name=settings.operator_name, portal_url=settings.portal_address
        ),
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base_s=settings.delivery_retry_base_s,
            max_s=settings.delivery_retry_max_s,
        ),
        lease={
            channel: timedelta(seconds=settings.lease_seconds(channel))
            for channel in ("eboks", "email", "sms", "einvoice", "print")
        },
        concurrency=settings.delivery_concurrency,
    )
    sla = SlaWatch(db=db, outbox=outbox, clock=clock)

    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            handlers=handlers(clock),
            clock=clock,
            background=[
                Background("dispatcher", lambda: dispatcher.run_forever(settings.dispatch_interval_s)),
                periodic("sla-watch", settings.sla_check_interval_s, sla.check),
            ],
            wake_after_commit=[dispatcher.wake],
        )
    )
