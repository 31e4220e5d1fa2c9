"""The notifier's events: the outcome of every delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from shared.events.base import Event, Topic

NOTIFIER_DELIVERIES = Topic("notifier.deliveries", 3, "recipient", "Outcome of every delivery")


# --- notifier.deliveries --------------------------------------------------------------------

# einvoice: an OIOUBL or Peppol invoice to the buyer's endpoint; print: a PDF for paper (S10).
Channel = Literal["eboks", "email", "sms", "einvoice", "print"]


class _DeliveryOutcome(Event):
    TOPIC = NOTIFIER_DELIVERIES
    KEY_FIELD = "recipient"

    delivery_id: UUID
    source_event_id: str
    source_event_type: str
    application_id: UUID | None = None
    channel: Channel
    recipient: str
    message_id: str
    attempts: int


class DeliverySucceeded(_DeliveryOutcome):
    delivered_at: datetime


class DeliveryFailed(_DeliveryOutcome):
    reason: str
    failed_at: datetime


class DeliverySlaBreached(_DeliveryOutcome):
    """The delivery deadline passed with the message undelivered (S2: 2 hours)."""

    deliver_by: datetime
    detected_at: datetime
