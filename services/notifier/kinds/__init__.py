"""Every kind of message the notifier delivers, declared once (`kinds/base.py`): the event it
answers, the deliveries it records (channel, recipients), and how it renders and sends them.

`KINDS` feeds both the worker's recorder (event → deliveries to record) and the dispatcher
(delivery kind → sender). Their order is the order the recorder asks them for an event.
"""

from services.notifier.kinds.base import (
    AnyKind,
    EmailTransport,
    Kind,
    Outlets,
    Planned,
    Sender,
    SmsTransport,
    TemplatedEmail,
    per_recipient_event_id,
)
from services.notifier.kinds.billing import (
    InvoiceDocumentDelivery,
    InvoiceDocumentEmail,
    InvoiceReady,
    OrderConfirmation,
    invoice_context,
    invoice_document_id,
    invoice_filename,
)
from services.notifier.kinds.logins import (
    CODE_KINDS,
    CredentialsLetter,
    LoginEmail,
    MobileChangedNotice,
    OneTimeCodeMessage,
    SecurityNotice,
)
from services.notifier.kinds.takeover import TakeoverCompletedNotice, TakeoverNotice

KINDS: tuple[type[AnyKind], ...] = (
    CredentialsLetter,
    LoginEmail,
    OneTimeCodeMessage,
    SecurityNotice,
    MobileChangedNotice,
    TakeoverNotice,
    TakeoverCompletedNotice,
    OrderConfirmation,
    InvoiceReady,
    InvoiceDocumentEmail,
    InvoiceDocumentDelivery,
)

__all__ = [
    "CODE_KINDS",
    "KINDS",
    "AnyKind",
    "CredentialsLetter",
    "EmailTransport",
    "InvoiceDocumentDelivery",
    "InvoiceDocumentEmail",
    "InvoiceReady",
    "Kind",
    "LoginEmail",
    "MobileChangedNotice",
    "OneTimeCodeMessage",
    "OrderConfirmation",
    "Outlets",
    "Planned",
    "SecurityNotice",
    "Sender",
    "SmsTransport",
    "TakeoverCompletedNotice",
    "TakeoverNotice",
    "TemplatedEmail",
    "invoice_context",
    "invoice_document_id",
    "invoice_filename",
    "per_recipient_event_id",
]
