"""What the notifier says about a delivery: the fields every outcome event carries
(`DeliverySucceeded`, `DeliveryFailed`, `DeliverySlaBreached`), and its recipient as logs show it."""

from __future__ import annotations

import re
import uuid
from typing import TypedDict, cast

from services.notifier.models import Delivery
from shared.events import Channel
from shared.logs import mask_contact

# Whose recipients are public (a CVR number in the CVR register; a GLN or Peppol participant
# in the e-invoicing registries), and so are logged as they are, so an operator can follow them.
_PUBLIC_RECIPIENTS = frozenset({"eboks", "einvoice", "print"})


class OutcomeFields(TypedDict):
    delivery_id: uuid.UUID
    source_event_id: str
    source_event_type: str
    application_id: uuid.UUID | None
    channel: Channel
    recipient: str
    message_id: str
    attempts: int


def outcome_fields(delivery: Delivery) -> OutcomeFields:
    """The fields of an outcome event about `delivery`."""
    return {
        "delivery_id": uuid.UUID(delivery.id),
        "source_event_id": delivery.source_event_id,
        "source_event_type": delivery.source_event_type,
        "application_id": uuid.UUID(delivery.application_id) if delivery.application_id else None,
        "channel": cast(Channel, delivery.channel),  # recorded from a kind's `Planned.channel`
        "recipient": delivery.recipient,
        "message_id": delivery.message_id,
        "attempts": delivery.attempts,
    }


def shown(delivery: Delivery) -> str:
    """The recipient as logs show it: an email address or a mobile number masked
    (`shared.logs.mask_contact`); a company's CVR number or e-invoice endpoint as it is."""
    return delivery.recipient if delivery.channel in _PUBLIC_RECIPIENTS else mask_contact(delivery.recipient)


def masked_in(delivery: Delivery, text: str) -> str:
    """`text`, a reason for a failure, with the recipient masked: mail servers and gateways
    quote the address or number they refused, the gateway without the `+`."""
    if delivery.channel in _PUBLIC_RECIPIENTS:
        return text
    shown_as = mask_contact(delivery.recipient)
    for written in dict.fromkeys((delivery.recipient, delivery.recipient.removeprefix("+"))):
        text = re.sub(re.escape(written), shown_as, text, flags=re.IGNORECASE)
    return text
