"""Notifier's worker: records deliveries from events (letters, one-time codes), dispatches them
by channel, watches deadlines."""

from __future__ import annotations

from datetime import timedelta

import faust
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.config import NotifierSettings
from services.notifier.email import SmtpTransport
from services.notifier.models import messaging
from services.notifier.service import (
    Dispatcher,
    RetryPolicy,
    Sender,
    SlaWatch,
    record_code,
    record_credential_changed,
    record_credentials,
    record_login_created,
)
from services.notifier.sms import SmsGateway
from services.notifier.transports import EboksTransport, HttpTransport, SpoolTransport
from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.envelope import Envelope
from shared.events import (
    IDENTITY_CREDENTIALS,
    IDENTITY_OTP,
    IDENTITY_USERS,
    CredentialChanged,
    CredentialsIssued,
    LoginCreated,
    OtpRequested,
)
from shared.messaging import Outbox
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


def create_worker(settings: NotifierSettings | None = None, *, clock: Clock | None = None) -> faust.App:
    settings = settings or NotifierSettings()
    clock = clock or SystemClock()
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
        sender=Sender(
            cvr=settings.operator_cvr, name=settings.operator_name, portal_url=settings.activation_url
        ),
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base_s=settings.delivery_retry_base_s,
            max_s=settings.delivery_retry_max_s,
        ),
        lease={
            channel: timedelta(seconds=settings.lease_seconds(channel))
            for channel in ("eboks", "email", "sms")
        },
        concurrency=settings.delivery_concurrency,
    )
    sla = SlaWatch(db=db, outbox=outbox, clock=clock)

    async def on_credentials(session: AsyncSession, envelope: Envelope) -> None:
        await record_credentials(session, envelope, clock)

    async def on_code(session: AsyncSession, envelope: Envelope) -> None:
        await record_code(session, envelope, clock)

    async def on_login_created(session: AsyncSession, envelope: Envelope) -> None:
        await record_login_created(session, envelope, clock)

    async def on_credential_changed(session: AsyncSession, envelope: Envelope) -> None:
        await record_credential_changed(session, envelope, clock)

    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            subscriptions={
                IDENTITY_CREDENTIALS: {
                    CredentialsIssued.TYPE: on_credentials,
                    LoginCreated.TYPE: on_login_created,
                },
                IDENTITY_OTP: {OtpRequested.TYPE: on_code},
                IDENTITY_USERS: {CredentialChanged.TYPE: on_credential_changed},
            },
            clock=clock,
            background=[
                Background("dispatcher", lambda: dispatcher.run_forever(settings.dispatch_interval_s)),
                periodic("sla-watch", settings.sla_check_interval_s, sla.check),
            ],
            wake_after_commit=[dispatcher.wake],
        )
    )
