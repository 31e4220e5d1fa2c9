"""The language identity keeps for each user reaches the notifier's recipient directory, and
the emails the directory addresses (order confirmations S9, invoices S8) are written in it."""

# ruff: noqa: F811 - the notifier fixtures are imported from test_notifier_billing_emails and used by name

from __future__ import annotations

from shared.events import UserDetailsChanged
from tests.integration.test_notifier_billing_emails import (  # noqa: F401 - fixtures
    AT,
    CVR,
    Notifier,
    database_url,
    invoice,
    notifier,
    ordered,
    text_of,
    user_created,
)


async def test_an_english_users_order_confirmation_and_invoice_email_are_in_english(notifier: Notifier) -> None:
    user = user_created(name="Mette Hansen", email="mette@example.dk").model_copy(update={"language": "en"})
    await notifier.receive(user)
    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.language == "en"

    await notifier.receive(ordered(by=user.user_id))
    await notifier.receive(invoice())
    mails = await notifier.send_due()

    subjects = sorted(str(m["Subject"]) for m in mails)
    assert subjects == ["Confirmation of your order of Mobil Fri 100 GB", "New invoice for Bageriet Solsikke ApS"]
    assert all("Hello Mette Hansen" in text_of(m) for m in mails)
    assert all(m["Content-Language"] == "en" for m in mails)


async def test_a_user_who_changes_to_english_is_written_to_in_english_from_then_on(notifier: Notifier) -> None:
    user = user_created(name="Mette Hansen", email="mette@example.dk")
    await notifier.receive(user)
    await notifier.receive(ordered(by=user.user_id))
    [danish] = await notifier.send_due()

    await notifier.receive(
        UserDetailsChanged(
            user_id=user.user_id,
            tenant_cvr=CVR,
            name=user.name,
            email=user.email,
            mobile=user.mobile,
            changed_at=AT,
            language="en",
        )
    )
    await notifier.receive(ordered(by=user.user_id))
    english = (await notifier.send_due())[-1]

    assert danish["Subject"].startswith("Bekræftelse af din bestilling")
    assert english["Subject"] == "Confirmation of your order of Mobil Fri 100 GB"


async def test_events_without_a_language_keep_the_recipient_danish(notifier: Notifier) -> None:
    """Version 1 of the events without the field: the default, Danish, as before."""
    user = user_created()
    payload = user.model_dump(mode="json")
    payload.pop("language")
    await notifier.receive(type(user).model_validate(payload))
    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.language == "da"
