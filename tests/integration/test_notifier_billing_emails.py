"""Emails about a company's invoices (S8) and orders (S9), addressed through the notifier's
recipient directory (a projection of `identity.users`): who is told, at which address, and
never twice for one event. Events go through the worker's own subscriptions and the
idempotent consumer, as they would from the topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Literal
from uuid import UUID

import pytest
from sqlalchemy import select

from services.notifier.bootstrap import build
from services.notifier.config import NotifierSettings
from services.notifier.directory import UnknownRecipient
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.eboks import SpoolTransport
from services.notifier.email import EmailReceipt, parse_mailbox
from services.notifier.kinds import InvoiceReady, Sender
from services.notifier.models import Delivery, Recipient, RecipientGrant, messaging
from services.notifier.recording import Recorder
from services.notifier.worker import handlers
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import decode, encode, new_event_id
from shared.events import (
    Event,
    Function,
    Grant,
    InvoiceIssued,
    SubscriptionOrdered,
    SubscriptionUpgraded,
    UserCreated,
    UserDeleted,
    UserDetailsChanged,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from shared.messaging import ConsumedMessage, IdempotentConsumer, Outbox, by_topic
from shared.sealing import Sealer
from tests.support.dead_letters import KeptDeadLetters

CVR = "22109340"
OTHER_CVR = "35657193"
ACCOUNT = "10020030"
OTHER_ACCOUNT = "10020031"
PORTAL = "https://selvbetjening.example.dk/"
FROM = parse_mailbox("Adgang Selvbetjening <no-reply@adgang.example.dk>")
AT = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


@dataclass
class MailTray:
    """An email transport that keeps what it is given."""

    sent: list[EmailMessage] = field(default_factory=list)

    async def send(self, message: EmailMessage) -> EmailReceipt:
        self.sent.append(message)
        return EmailReceipt(message_id=str(message["Message-ID"]), location=f"mail:{message['To']}")


class Notifier:
    """The notifier worker's consumers and dispatcher over one database, minus Kafka."""

    def __init__(self, db: Database, clock: FrozenClock, sealer: Sealer, spool: Path) -> None:
        self.db = db
        self.clock = clock
        self.mail = MailTray()
        self.dead_letters = KeptDeadLetters()
        self._consumers = {
            topic.name: IdempotentConsumer(
                name=f"notifier:{topic.name}",
                db=db,
                tables=messaging,
                handlers=topic_handlers,
                dead_letters=self.dead_letters,
                clock=clock,
                retries=2,
                backoff=0,
            )
            for topic, topic_handlers in by_topic(
                handlers(build(NotifierSettings(database_url=db.url, var_dir=spool.parent), clock=clock, sealer=sealer))
            ).items()
        }
        self.dispatcher = Dispatcher(
            db=db,
            outbox=Outbox(messaging, clock),
            clock=clock,
            sealer=sealer,
            eboks=SpoolTransport(spool),
            sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url=PORTAL),
            email=self.mail,
            email_from=FROM,
            retry=RetryPolicy(max_attempts=3, base_s=2, max_s=60),
            lease=timedelta(seconds=20),
        )

    async def receive(self, event: Event, *, event_id: str | None = None) -> str:
        """Consume the event as the worker would: handled, duplicate or dead-lettered."""
        record = encode(event, event_id=event_id or new_event_id(), time=self.clock.now())
        return await self._consumers[record.topic].process(
            ConsumedMessage(topic=record.topic, key=record.key, value=record.value, headers=record.headers)
        )

    async def send_due(self) -> list[EmailMessage]:
        await self.dispatcher.dispatch_due()
        return self.mail.sent

    async def deliveries(self) -> list[Delivery]:
        async with self.db.transaction() as session:
            return list(await session.scalars(select(Delivery).order_by(Delivery.recipient)))

    async def recipient(self, user_id: UUID) -> Recipient | None:
        async with self.db.transaction() as session:
            return await session.get(Recipient, str(user_id))

    async def grants(self, user_id: UUID) -> dict[str, Literal["all"] | list[str]]:
        async with self.db.transaction() as session:
            rows = await session.scalars(select(RecipientGrant).where(RecipientGrant.user_id == str(user_id)))
            return {g.cvr: "all" if g.all_accounts else g.account_numbers for g in rows}


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


@pytest.fixture
def notifier(db: Database, clock: FrozenClock, sealer: Sealer, tmp_path: Path) -> Notifier:
    return Notifier(db, clock, sealer, tmp_path / "eboks")


def user_created(
    *,
    name: str = "Mette Hansen",
    email: str = "mette@example.dk",
    grants: Sequence[Grant] = (Grant(cvr=CVR, accounts="all"),),
    functions: Sequence[Function] = ("invoices", "orders"),
) -> UserCreated:
    return UserCreated(
        user_id=uuid.uuid4(),
        tenant_cvr=CVR,
        username=f"{CVR}-{uuid.uuid4().hex[:6]}",
        name=name,
        email=email,
        mobile="+4520123456",
        role="user",
        grants=list(grants),
        functions=list(functions),
        created_at=AT,
    )


def details_changed(user: UserCreated, *, name: str, email: str) -> UserDetailsChanged:
    return UserDetailsChanged(
        user_id=user.user_id, tenant_cvr=CVR, name=name, email=email, mobile=user.mobile, changed_at=AT
    )


def grants_changed(user: UserCreated, grants: list[Grant], functions: list[Function]) -> UserGrantsChanged:
    return UserGrantsChanged(
        user_id=user.user_id, tenant_cvr=CVR, grants=grants, functions=functions, changed_at=AT
    )


def disabled(user: UserCreated) -> UserDisabled:
    return UserDisabled(user_id=user.user_id, tenant_cvr=CVR, disabled_at=AT)


def enabled(user: UserCreated) -> UserEnabled:
    return UserEnabled(user_id=user.user_id, tenant_cvr=CVR, enabled_at=AT)


def deleted(user: UserCreated) -> UserDeleted:
    return UserDeleted(
        user_id=user.user_id, tenant_cvr=CVR, role="user", reason="deleted-by-administrator", deleted_at=AT
    )


def invoice(*, cvr: str = CVR, account_number: str = ACCOUNT) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="2026-004711",
        cvr=cvr,
        company_name="Bageriet Solsikke ApS",
        account_number=account_number,
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        issued_on=date(2026, 2, 1),
        due_on=date(2026, 2, 15),
        amount_excl_vat_ore=99_600,
        vat_ore=24_900,
        amount_incl_vat_ore=124_500,
    )


def ordered(by: UUID) -> SubscriptionOrdered:
    return SubscriptionOrdered(
        order_id=uuid.uuid4(),
        cvr=CVR,
        account_number=ACCOUNT,
        subscription_id=uuid.uuid4(),
        product_code="MOBIL-FRI-100",
        product_name="Mobil Fri 100 GB",
        monthly_fee_ore=19_900,
        ordered_by=by,
        ordered_at=AT,
    )


def upgraded(by: UUID) -> SubscriptionUpgraded:
    return SubscriptionUpgraded(
        order_id=uuid.uuid4(),
        cvr=CVR,
        account_number=ACCOUNT,
        subscription_id=uuid.uuid4(),
        identifier="+4520998877",
        from_product_code="MOBIL-10",
        to_product_code="MOBIL-FRI-100",
        to_product_name="Mobil Fri 100 GB",
        monthly_fee_ore=123_450,
        ordered_by=by,
        upgraded_at=AT,
    )


def text_of(message: EmailMessage) -> str:
    return str(message.get_content())


# --- the directory --------------------------------------------------------------------------


async def test_a_created_user_is_in_the_directory_with_their_address_grants_and_functions(
    notifier: Notifier,
) -> None:
    user = user_created(
        grants=[Grant(cvr=CVR, accounts="all"), Grant(cvr=OTHER_CVR, accounts=[OTHER_ACCOUNT, ACCOUNT])],
        functions=["invoices", "telephony"],
    )
    assert await notifier.receive(user) == "handled"

    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None
    assert recipient.tenant_cvr == CVR
    assert (recipient.name, recipient.email) == ("Mette Hansen", "mette@example.dk")
    assert recipient.functions == ["invoices", "telephony"] and recipient.status == "active"
    assert await notifier.grants(user.user_id) == {CVR: "all", OTHER_CVR: [ACCOUNT, OTHER_ACCOUNT]}


async def test_a_change_of_grants_replaces_the_companies_accounts_and_functions(notifier: Notifier) -> None:
    user = user_created(grants=[Grant(cvr=CVR, accounts="all"), Grant(cvr=OTHER_CVR, accounts="all")])
    await notifier.receive(user)

    await notifier.receive(grants_changed(user, [Grant(cvr=CVR, accounts=[ACCOUNT])], ["orders"]))

    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.functions == ["orders"]
    assert await notifier.grants(user.user_id) == {CVR: [ACCOUNT]}


async def test_a_change_of_details_gives_the_new_name_and_email(notifier: Notifier) -> None:
    user = user_created()
    await notifier.receive(user)

    await notifier.receive(details_changed(user, name="Mette Krogh", email="mette.krogh@example.dk"))

    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None
    assert (recipient.name, recipient.email) == ("Mette Krogh", "mette.krogh@example.dk")
    assert await notifier.grants(user.user_id) == {CVR: "all"}, "details leave the grants alone"


async def test_a_disabled_user_is_marked_disabled_and_active_again_when_enabled(notifier: Notifier) -> None:
    user = user_created()
    await notifier.receive(user)

    await notifier.receive(disabled(user))
    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.status == "disabled"

    await notifier.receive(enabled(user))
    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.status == "active"


async def test_a_deleted_user_keeps_only_the_mark_and_no_later_event_brings_them_back(
    notifier: Notifier,
) -> None:
    user = user_created()
    await notifier.receive(user)

    await notifier.receive(deleted(user))
    await notifier.receive(enabled(user))
    await notifier.receive(details_changed(user, name="Mette Krogh", email="mette.krogh@example.dk"))
    await notifier.receive(grants_changed(user, [Grant(cvr=CVR, accounts="all")], ["invoices"]))

    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None
    assert (recipient.status, recipient.name, recipient.email, recipient.functions) == ("deleted", "", "", [])
    assert await notifier.grants(user.user_id) == {}


async def test_a_change_to_a_user_the_directory_never_saw_is_skipped(notifier: Notifier) -> None:
    stranger = user_created()  # never received
    for event in (
        details_changed(stranger, name="Ukendt", email="ukendt@example.dk"),
        grants_changed(stranger, [Grant(cvr=CVR, accounts="all")], ["invoices"]),
        disabled(stranger),
        enabled(stranger),
        deleted(stranger),
    ):
        assert await notifier.receive(event) == "handled", type(event).__name__

    assert await notifier.recipient(stranger.user_id) is None
    assert [letter.reason for letter in notifier.dead_letters.sent] == []


async def test_a_redelivered_user_event_changes_nothing(notifier: Notifier) -> None:
    user = user_created()
    created_id = new_event_id()
    await notifier.receive(user, event_id=created_id)
    await notifier.receive(details_changed(user, name="Mette Krogh", email="mette.krogh@example.dk"))

    assert await notifier.receive(user, event_id=created_id) == "duplicate"

    recipient = await notifier.recipient(user.user_id)
    assert recipient is not None and recipient.email == "mette.krogh@example.dk"


# --- invoice ready (S8) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "grants", "functions", "afterwards"),
    [
        ("full access", [Grant(cvr=CVR, accounts="all")], ["invoices"], []),
        ("limited access naming the account", [Grant(cvr=CVR, accounts=[ACCOUNT])], ["invoices"], []),
        ("enabled again", [Grant(cvr=CVR, accounts="all")], ["invoices"], ["disabled", "enabled"]),
    ],
)
async def test_a_user_with_the_invoices_function_for_the_account_is_emailed_the_invoice(
    notifier: Notifier, case: str, grants: list[Grant], functions: list[Function], afterwards: list[str]
) -> None:
    user = user_created(grants=grants, functions=functions)
    await notifier.receive(user)
    for step in afterwards:
        await notifier.receive({"disabled": disabled, "enabled": enabled}[step](user))

    await notifier.receive(invoice())

    [delivery] = await notifier.deliveries()
    assert (delivery.kind, delivery.channel, delivery.recipient) == ("invoice_ready", "email", user.email)
    assert delivery.recipient_name == user.name


@pytest.mark.parametrize(
    ("case", "grants", "functions", "afterwards"),
    [
        ("without the invoices function", [Grant(cvr=CVR, accounts="all")], ["orders", "telephony"], []),
        ("an account outside a limited grant", [Grant(cvr=CVR, accounts=[OTHER_ACCOUNT])], ["invoices"], []),
        ("access to another company only", [Grant(cvr=OTHER_CVR, accounts="all")], ["invoices"], []),
        ("a disabled login", [Grant(cvr=CVR, accounts="all")], ["invoices"], ["disabled"]),
        ("a deleted login", [Grant(cvr=CVR, accounts="all")], ["invoices"], ["deleted"]),
        ("grants taken away", [Grant(cvr=CVR, accounts="all")], ["invoices"], ["granted other company"]),
    ],
)
async def test_a_user_who_may_not_see_the_invoice_is_not_emailed(
    notifier: Notifier, case: str, grants: list[Grant], functions: list[Function], afterwards: list[str]
) -> None:
    user = user_created(grants=grants, functions=functions)
    await notifier.receive(user)
    for step in afterwards:
        change = {
            "disabled": disabled(user),
            "deleted": deleted(user),
            "granted other company": grants_changed(
                user, [Grant(cvr=OTHER_CVR, accounts="all")], ["invoices"]
            ),
        }[step]
        await notifier.receive(change)

    assert await notifier.receive(invoice()) == "handled"

    assert await notifier.deliveries() == []


async def test_each_user_who_may_see_the_invoice_gets_their_own_email(notifier: Notifier) -> None:
    mette = user_created(name="Mette Hansen", email="mette@example.dk")
    jonas = user_created(
        name="Jonas Berg", email="jonas@example.dk", grants=[Grant(cvr=CVR, accounts=[ACCOUNT])]
    )
    bookkeeper = user_created(name="Bo Holm", email="bo@example.dk", functions=["orders"])
    for user in (mette, jonas, bookkeeper):
        await notifier.receive(user)

    await notifier.receive(invoice())
    sent = await notifier.send_due()

    assert sorted(str(m["To"]) for m in sent) == ["jonas@example.dk", "mette@example.dk"]
    assert len({str(m["Message-ID"]) for m in sent}) == 2


async def test_a_redelivered_invoice_event_creates_no_second_email(
    notifier: Notifier, db: Database, clock: FrozenClock
) -> None:
    await notifier.receive(user_created(email="mette@example.dk"))
    await notifier.receive(user_created(email="jonas@example.dk"))
    event, event_id = invoice(), new_event_id()

    assert await notifier.receive(event, event_id=event_id) == "handled"
    assert await notifier.receive(event, event_id=event_id) == "duplicate"
    # Past the inbox too (a consumer that lost its inbox row, a replay): the deliveries' own
    # source ids, one per recipient, still refuse a second copy.
    record = encode(event, event_id=event_id, time=clock.now())
    envelope = decode(topic=record.topic, headers=record.headers, value=record.value)
    async with db.transaction() as session:
        await Recorder(clock, kinds=(InvoiceReady,)).record(session, envelope)

    deliveries = await notifier.deliveries()
    assert [d.recipient for d in deliveries] == ["jonas@example.dk", "mette@example.dk"]
    assert len({d.source_event_id for d in deliveries}) == 2
    assert all(len(d.source_event_id) <= 64 and d.source_event_id != event_id for d in deliveries)
    assert len(await notifier.send_due()) == 2
    assert len(await notifier.send_due()) == 2, "nothing more to send"


async def test_the_invoice_email_gives_company_account_period_amount_due_date_and_the_portal(
    notifier: Notifier,
) -> None:
    await notifier.receive(user_created(name="Mette Hansen", email="mette@example.dk"))
    await notifier.receive(invoice())

    [mail] = await notifier.send_due()

    assert mail["To"] == "mette@example.dk"
    assert mail["Subject"] == "Ny faktura til Bageriet Solsikke ApS"
    text = text_of(mail)
    assert "Hej Mette Hansen" in text
    assert f"Bageriet Solsikke ApS (CVR {CVR})" in text
    assert ACCOUNT in text and "2026-004711" in text
    assert "1. januar 2026 - 31. januar 2026" in text
    assert "1.245,00 kr." in text
    assert "15. februar 2026" in text
    assert PORTAL in text


# --- order confirmation (S9) ----------------------------------------------------------------


async def test_an_order_confirmation_goes_to_the_orderers_current_email(notifier: Notifier) -> None:
    user = user_created(name="Mette Hansen", email="mette@example.dk")
    await notifier.receive(user)
    await notifier.receive(details_changed(user, name="Mette Krogh", email="mette.krogh@example.dk"))
    order = ordered(by=user.user_id)

    assert await notifier.receive(order) == "handled"
    [mail] = await notifier.send_due()

    assert mail["To"] == "mette.krogh@example.dk"
    assert mail["Subject"] == "Bekræftelse af din bestilling af Mobil Fri 100 GB"
    text = text_of(mail)
    assert "Hej Mette Krogh" in text
    assert "Mobil Fri 100 GB" in text and ACCOUNT in text
    assert "199,00 kr." in text
    assert str(order.order_id) in text
    assert PORTAL in text


async def test_an_upgrade_confirmation_names_the_subscription_the_new_product_and_its_price(
    notifier: Notifier,
) -> None:
    user = user_created()
    await notifier.receive(user)
    upgrade = upgraded(by=user.user_id)

    await notifier.receive(upgrade)
    [mail] = await notifier.send_due()

    assert mail["Subject"] == "Bekræftelse af din opgradering til Mobil Fri 100 GB"
    text = text_of(mail)
    assert "+4520998877 er opgraderet til Mobil Fri 100 GB" in text
    assert "1.234,50 kr." in text and str(upgrade.order_id) in text


async def test_a_colleague_who_did_not_order_is_not_told(notifier: Notifier) -> None:
    orderer, colleague = user_created(email="mette@example.dk"), user_created(email="jonas@example.dk")
    await notifier.receive(orderer)
    await notifier.receive(colleague)

    await notifier.receive(ordered(by=orderer.user_id))

    assert [d.recipient for d in await notifier.deliveries()] == ["mette@example.dk"]


@pytest.mark.parametrize("ending", [disabled, deleted])
async def test_an_order_by_a_disabled_or_deleted_login_is_confirmed_to_nobody(
    notifier: Notifier, ending: Callable[[UserCreated], Event]
) -> None:
    user = user_created()
    await notifier.receive(user)
    await notifier.receive(ending(user))

    assert await notifier.receive(ordered(by=user.user_id)) == "handled"

    assert await notifier.deliveries() == []
    assert [letter.reason for letter in notifier.dead_letters.sent] == []


async def test_an_order_by_a_user_the_directory_does_not_know_yet_is_tried_again_not_dropped(
    notifier: Notifier, db: Database, clock: FrozenClock
) -> None:
    user = user_created()
    order, event_id = ordered(by=user.user_id), new_event_id()
    record = encode(order, event_id=event_id, time=clock.now())
    envelope = decode(topic=record.topic, headers=record.headers, value=record.value)

    with pytest.raises(UnknownRecipient):
        async with db.transaction() as session:
            await Recorder(clock).record(session, envelope)
    # The consumer retries the handler, then dead-letters the event, remembering nothing of it.
    assert await notifier.receive(order, event_id=event_id) == "dead-lettered"
    assert [letter.reason for letter in notifier.dead_letters.sent] == ["handler failed: UnknownRecipient"]
    assert await notifier.deliveries() == []

    # Once identity's UserCreated has arrived, the same event (replayed from the DLQ) is confirmed.
    await notifier.receive(user)
    assert await notifier.receive(order, event_id=event_id) == "handled"
    [mail] = await notifier.send_due()
    assert mail["To"] == user.email


async def test_a_redelivered_order_event_sends_one_confirmation(notifier: Notifier) -> None:
    user = user_created()
    await notifier.receive(user)
    order, event_id = ordered(by=user.user_id), new_event_id()

    await notifier.receive(order, event_id=event_id)
    assert await notifier.receive(order, event_id=event_id) == "duplicate"

    assert len(await notifier.send_due()) == 1
