"""A login's mobile number changes — by the user, confirmed by the code sent to the new number,
or by their administrator — and the number it had is told by SMS, in the user's language, with
the new number masked; the old email is told as before (issue 10 item 2: "the old address
told"). Identity's real API, then the notifier's real kinds over the database under test."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import uuid

from sqlalchemy import select

from services.notifier.models import Delivery
from services.notifier.recording import Recorder
from services.notifier.sms import sms_segments
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import decode, encode
from shared.events import CredentialChanged
from shared.sealing import Sealer
from tests.integration.test_administration import (
    activate_and_log_in,
    colleague,
    group_admin,
    login_email,
)
from tests.integration.test_login import client, database_url, last_code, settings  # noqa: F401 - fixtures
from tests.integration.test_own_profile import a_colleague, events_of, sign_in
from tests.integration.test_takeover import NotifierUnderTest

OLD_MOBILE = "+4520304050"  # the colleague's, as created
NEW_MOBILE = "+4531323334"


async def contact_notices(db: Database, user_id: str) -> list[CredentialChanged]:
    return [
        e
        for e in await events_of(db, CredentialChanged)
        if str(e.user_id) == user_id and e.change == "contact_details_changed"
    ]


async def delivered(notifier: NotifierUnderTest, notices: list[CredentialChanged]) -> None:
    """The notices recorded and sent by the notifier's real kinds; every delivery succeeded."""
    for notice in notices:
        await notifier.receive(notice)
    await notifier.dispatcher.dispatch_due()
    async with notifier.db.transaction() as session:
        deliveries = list(await session.scalars(select(Delivery)))
    assert deliveries and all(d.status == "delivered" for d in deliveries), [
        (d.kind, d.status, d.last_error) for d in deliveries
    ]


def shows_no_new_number(text: str) -> bool:
    digits = "".join(c for c in text if c.isdigit())
    return "31323334" not in digits and "31 32 33 34" not in text


async def test_a_confirmed_new_mobile_tells_the_old_number_by_sms_in_english_but_not_on_start_or_a_wrong_code(
    db, clock, sealer, client, notifier_url, tmp_path
) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client, language="en")
    headers = (await sign_in(client, db, sealer, username))["headers"]
    started = await client.post("/v1/me/mobile", json={"mobile": "+45 31 32 33 34"}, headers=headers)
    assert started.status_code == 202, started.text
    _, code = await last_code(db, sealer)
    confirm = f"/v1/me/contact-changes/{started.json()['change_id']}/confirm"
    assert await contact_notices(db, user_id) == []  # a start tells nobody: nothing has changed

    wrong = await client.post(confirm, json={"code": "000000" if code != "000000" else "111111"}, headers=headers)
    assert wrong.status_code == 400
    assert await contact_notices(db, user_id) == []

    assert (await client.post(confirm, json={"code": code}, headers=headers)).status_code == 200
    [notice] = await contact_notices(db, user_id)
    assert (notice.email, notice.old_mobile, notice.new_mobile, notice.language) == (
        "jonas@nordlys.example",
        OLD_MOBILE,
        NEW_MOBILE,
        "en",
    )

    notifier = NotifierUnderTest.start(notifier_url, clock, sealer, tmp_path)
    await delivered(notifier, [notice])
    [(to, text)] = notifier.sms.sent
    assert to == OLD_MOBILE
    assert text.startswith("Self-service: Your login's mobile number changed to +45 ** ** *3 34 on ")
    assert text.endswith("Not you? Contact your administrator at once.")
    assert sms_segments(text) == 1
    assert shows_no_new_number(text)
    [mail] = notifier.mail.sent  # the old email is still told
    assert mail["To"] == "jonas@nordlys.example" and mail["Content-Language"] == "en"


async def test_an_administrators_change_of_a_mobile_tells_the_old_number_by_sms_in_danish(
    db, clock, sealer, client, notifier_url, tmp_path
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    created = await client.post("/v1/users", json=colleague(), headers=admin)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    event, code = await login_email(db, sealer)
    await activate_and_log_in(client, db, sealer, event.username, code)

    renamed = await client.patch(f"/v1/users/{user_id}", json={"name": "Jonas Berg Holm"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert await contact_notices(db, user_id) == []  # not where codes go: nobody is told
    moved = await client.patch(f"/v1/users/{user_id}", json={"mobile": "31 32 33 34"}, headers=admin)
    assert moved.status_code == 200, moved.text

    [notice] = await contact_notices(db, user_id)
    assert (notice.old_mobile, notice.new_mobile, notice.language) == (OLD_MOBILE, NEW_MOBILE, "da")
    notifier = NotifierUnderTest.start(notifier_url, clock, sealer, tmp_path)
    await delivered(notifier, [notice])
    [(to, text)] = notifier.sms.sent
    assert to == OLD_MOBILE
    assert text.startswith("Selvbetjening: Dit login har fået nyt mobilnummer, +45 ** ** *3 34, ")
    assert text.endswith("Var det ikke dig, så kontakt straks din administrator.")
    assert sms_segments(text) == 1
    assert shows_no_new_number(text)
    [mail] = notifier.mail.sent
    assert mail["To"] == "jonas@nordlys.example" and mail["Content-Language"] == "da"


async def test_a_new_email_alone_tells_the_old_email_and_sends_no_sms(
    db, clock, sealer, client, notifier_url, tmp_path
) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]
    started = await client.post("/v1/me/email", json={"email": "jonas.ny@nordlys.example"}, headers=headers)
    _, code = await last_code(db, sealer)
    confirm = f"/v1/me/contact-changes/{started.json()['change_id']}/confirm"
    assert (await client.post(confirm, json={"code": code}, headers=headers)).status_code == 200

    [notice] = await contact_notices(db, user_id)
    assert (notice.email, notice.old_mobile, notice.new_mobile) == ("jonas@nordlys.example", None, None)
    notifier = NotifierUnderTest.start(notifier_url, clock, sealer, tmp_path)
    await delivered(notifier, [notice])
    assert notifier.sms.sent == []
    [mail] = notifier.mail.sent
    assert mail["To"] == "jonas@nordlys.example"


async def test_a_notice_received_twice_is_sent_once_to_each_address(
    clock: FrozenClock, sealer: Sealer, notifier_url: str, tmp_path
) -> None:
    """The consumer may see an event again after a crash: neither the email nor the SMS twice."""
    notice = CredentialChanged(
        user_id=uuid.uuid4(),
        name="Jonas Berg",
        email="jonas@nordlys.example",
        change="contact_details_changed",
        changed_at=clock.now(),
        old_mobile=OLD_MOBILE,
        new_mobile=NEW_MOBILE,
    )
    record = encode(notice, event_id=str(uuid.uuid4()), time=clock.now())
    notifier = NotifierUnderTest.start(notifier_url, clock, sealer, tmp_path)
    for _ in range(2):
        async with notifier.db.transaction() as session:
            envelope = decode(topic=record.topic, headers=record.headers, value=record.value)
            await Recorder(clock).record(session, envelope)
    await notifier.dispatcher.dispatch_due()
    assert [m["To"] for m in notifier.mail.sent] == ["jonas@nordlys.example"]
    assert [to for to, _ in notifier.sms.sent] == [OLD_MOBILE]
