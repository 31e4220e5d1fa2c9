"""The SMS to a login's old mobile number (issue 10 item 2): in the user's language, the new
number masked, one GSM-7 message even on the longest date."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from services.notifier.kinds import MobileChangedNotice
from services.notifier.models import Delivery
from services.notifier.sms import SmsReceipt, gsm7_septets, sms_segments
from services.notifier.transport_base import PermanentDeliveryError
from shared.events import CredentialChanged

LONGEST_DATE = datetime(2026, 9, 30, 10, 59, tzinfo=UTC)  # "september", two-digit day and hour


@dataclass
class SmsTray:
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt:
        self.sent.append((to, text))
        return SmsReceipt(reference=reference, location=f"sms:{to}")


def delivery_of(notice: CredentialChanged) -> Delivery:
    return Delivery(
        id=str(uuid.uuid4()),
        kind="mobile_changed_sms",
        channel="sms",
        recipient=notice.old_mobile,
        message_id=str(uuid.uuid4()),
        source_payload=notice.model_dump_json(),
        created_at=LONGEST_DATE,
    )


def notice(language: str, **changes: object) -> CredentialChanged:
    return CredentialChanged.model_validate(
        {
            "user_id": uuid.uuid4(),
            "name": "Jonas Berg",
            "email": "jonas@nordlys.example",
            "change": "contact_details_changed",
            "changed_at": LONGEST_DATE,
            "language": language,
            "old_mobile": "+4520304050",
            "new_mobile": "+4531323334",
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "da",
            "Selvbetjening: Dit login har fået nyt mobilnummer, +45 ** ** *3 34, 30. september 2026 kl. 12.59. "
            "Var det ikke dig, så kontakt straks din administrator.",
        ),
        (
            "en",
            "Self-service: Your login's mobile number changed to +45 ** ** *3 34 on 30 September 2026 at 12:59 "
            "(Danish time). Not you? Contact your administrator at once.",
        ),
    ],
)
async def test_the_old_number_is_told_in_the_users_language_in_one_gsm7_sms(language: str, expected: str) -> None:
    sms = SmsTray()
    location = await MobileChangedNotice(sms=sms).send(delivery_of(notice(language)))
    [(to, text)] = sms.sent
    assert (location, to, text) == ("sms:+4520304050", "+4520304050", expected)
    assert gsm7_septets(text) is not None and sms_segments(text) == 1


async def test_a_notice_without_an_old_number_or_without_a_gateway_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentDeliveryError, match="no mobile number the login had"):
        await MobileChangedNotice(sms=SmsTray()).send(delivery_of(notice("da", old_mobile=None)))
    with pytest.raises(PermanentDeliveryError, match="no SMS gateway"):
        await MobileChangedNotice(sms=None).send(delivery_of(notice("da")))
