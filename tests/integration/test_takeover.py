"""Taking over a company's administration through its e-Boks (issue 10, item 3; beyond S3,
S2: the letter proves authority for the company). Identity's real handlers and HTTP API, the
notifier's real kinds, onboarding's real API, on the database under test; the notice period
passes on the `clock` fixture."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select

from services.identity.models import AuditEntry, Takeover, messaging
from services.identity.passwords import PasswordHashing
from services.identity.provisioning import Provisioning
from services.identity.takeover import TakeoverExpiryWatch
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.eboks import SpoolTransport
from services.notifier.email import EmailReceipt, parse_mailbox
from services.notifier.kinds import Sender
from services.notifier.letters import render_credentials_letter
from services.notifier.models import messaging as notifier_messaging
from services.notifier.recording import Recorder
from services.notifier.sms import SmsReceipt
from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from services.onboarding.models import messaging as onboarding_messaging
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import (
    AdministratorProvisioningRejected,
    ApplicationSubmitted,
    Contact,
    CredentialsIssued,
    Event,
    TakeoverCancelled,
    TakeoverCompleted,
    TakeoverExpired,
    TakeoverNoticeIssued,
    TakeoverRequested,
    UserDeleted,
    UserDisabled,
)
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.test_activation import (
    PASSWORD,
    activate_from_letter,
    envelope_of,
    problem_type,
    start_letter_activation,
)
from tests.integration.test_administration import (
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.integration.test_support import staff_login
from tests.support.asgi import AppTransport

PARENT = "35657193"
NOTICE = timedelta(hours=72)
CODE_TTL = timedelta(days=7)
NEW_EMAIL, NEW_MOBILE = "ny@nordlys.example", "+4540506070"


def provisioning(clock: FrozenClock, sealer: Sealer) -> Provisioning:
    return Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=CODE_TTL, takeover_notice_period=NOTICE
    )


def takeover_application(clock: FrozenClock, cvr: str = PARENT) -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=cvr,
        company_name="Nordlys",
        contact=Contact(name="Ny Chef", email=NEW_EMAIL, mobile=NEW_MOBILE),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
        takeover=True,
    )


async def submit(db: Database, clock: FrozenClock, sealer: Sealer, event: ApplicationSubmitted) -> None:
    async with db.transaction() as session:
        await provisioning(clock, sealer).on_application_submitted(session, envelope_of(event, clock))


async def events(db: Database, event_type: type) -> list:
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(messaging.outbox.c.value, messaging.outbox.c.headers).order_by(messaging.outbox.c.seq)
            )
        ).all()
    return [event_type.model_validate_json(v) for v, h in rows if f'"{event_type.TYPE}"' in h or event_type.TYPE in h]


async def audit_actions(db: Database) -> list[tuple[str, str, str | None]]:
    async with db.transaction() as session:
        entries = await session.scalars(select(AuditEntry).where(AuditEntry.action.like("%takeover%")))
        return sorted((e.action, e.actor_id, e.target_user_id) for e in entries)


@dataclass
class Setup:
    """A company with an activated administrator (logged in), and a takeover of it requested."""

    admin_username: str
    admin_id: str
    admin: dict
    letter: CredentialsIssued
    code: str
    notices: list[TakeoverNoticeIssued]
    tokens: dict[str, str] = field(default_factory=dict)  # admin user id -> cancel token


async def requested_takeover(db, clock, sealer, client, *, with_colleague_admin: bool = False) -> Setup:
    admin_username = await activated_group_admin(db, clock, sealer, client)
    admin = await log_in_by_email(client, db, sealer, admin_username)
    admin_id = (await client.get("/v1/me", headers=admin)).json()["user_id"]
    if with_colleague_admin:
        created = await client.post(
            "/v1/users",
            headers=admin,
            json=colleague(
                email="kim@nordlys.example",
                grants=[{"cvr": PARENT, "accounts": "all"}],
                functions=["invoices", "user_admin"],
            ),
        )
        assert created.status_code == 201, created.text
        _, code = await login_email(db, sealer)
        activated = await client.post(
            "/v1/activation",
            json={"username": created.json()["username"], "activation_code": code, "password": PASSWORD},
        )
        assert activated.status_code == 200, activated.text
        plain = await client.post("/v1/users", headers=admin, json=colleague(email="pia@nordlys.example"))
        assert plain.status_code == 201, plain.text
    await submit(db, clock, sealer, takeover_application(clock))
    letter = (await events(db, CredentialsIssued))[-1]
    code = sealer.unseal(letter.activation_code, context=CredentialsIssued.sealing_context(letter.user_id))
    notices = await events(db, TakeoverNoticeIssued)
    tokens = {
        str(n.user_id): sealer.unseal(n.cancel_token, context=TakeoverNoticeIssued.sealing_context(n.notice_id))
        for n in notices
    }
    return Setup(admin_username, admin_id, admin, letter, code, notices, tokens)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- the request --------------------------------------------------------------------------------


async def test_a_takeover_sends_a_letter_with_its_notice_period_and_tells_every_administrator(
    db, clock, sealer, client
) -> None:
    requested_at = clock.now()
    setup = await requested_takeover(db, clock, sealer, client, with_colleague_admin=True)
    letter = setup.letter
    assert letter.recipient_cvr == PARENT
    assert letter.takeover_usable_from == requested_at + NOTICE
    assert letter.takeover_notice_hours == 72
    assert letter.expires_at == requested_at + NOTICE + CODE_TTL

    [requested] = await events(db, TakeoverRequested)
    assert (requested.usable_from, requested.user_id) == (requested_at + NOTICE, letter.user_id)
    told = {n.email for n in setup.notices}
    # Both logins that administer the company; the colleague without user_admin is not told.
    assert told == {"mette@nordlys.example", "kim@nordlys.example"}
    assert {str(n.user_id) for n in requested.notified} == {str(n.user_id) for n in setup.notices}
    assert all(n.usable_from == requested_at + NOTICE and n.cvr == PARENT for n in setup.notices)
    assert ("takeover.requested", str(letter.user_id), str(letter.user_id)) in await audit_actions(db)
    # The tokens are sealed on the bus and stored only as digests.
    async with db.transaction() as session:
        stored = (await session.execute(select(messaging.outbox.c.value))).scalars().all()
    assert not any(token in value for token in setup.tokens.values() for value in stored)


async def test_the_code_is_refused_until_the_notice_period_has_passed_and_nothing_is_used_up(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    usable_from = setup.letter.takeover_usable_from
    assert usable_from is not None
    clock.advance(NOTICE - timedelta(seconds=1))
    early = await start_letter_activation(client, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    assert early.status_code == 409
    assert problem_type(early) == "takeover-notice-period"
    assert _at(early.json()["usable_from"]) == usable_from
    assert usable_from.isoformat() in early.json()["detail"]

    clock.advance(timedelta(seconds=1))
    started = await start_letter_activation(client, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    assert started.status_code == 202, started.text


async def test_completion_activates_the_new_administrator_and_disables_the_old_ones_and_ends_their_sessions(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client, with_colleague_admin=True)
    clock.advance(NOTICE)
    activated = await activate_from_letter(
        client, db, sealer, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE
    )
    assert activated.status_code == 200, activated.text
    new_id = activated.json()["user_id"]

    assert (await client.get("/v1/me", headers=setup.admin)).status_code == 401  # the old session ended
    old_login = await client.post("/v1/login", json={"username": setup.admin_username, "password": PASSWORD})
    assert problem_type(old_login) == "login-disabled"
    new_admin = await log_in_by_email(client, db, sealer, setup.letter.username)
    users = {u["email"]: u for u in (await client.get("/v1/users", headers=new_admin)).json()}
    assert users["mette@nordlys.example"]["status"] == "disabled"
    assert users["kim@nordlys.example"]["status"] == "disabled"
    assert users["pia@nordlys.example"]["status"] == "pending"  # not an administrator: kept
    assert users[NEW_EMAIL]["status"] == "active"

    [completed] = await events(db, TakeoverCompleted)
    assert completed.user_id == uuid.UUID(new_id)
    assert {d.email for d in completed.disabled} == {"mette@nordlys.example", "kim@nordlys.example"}
    disabled = await events(db, UserDisabled)
    assert {(str(d.user_id), str(d.by_user_id)) for d in disabled} == {
        (str(users["mette@nordlys.example"]["id"]), new_id),
        (str(users["kim@nordlys.example"]["id"]), new_id),
    }
    async with db.transaction() as session:
        [takeover] = list(await session.scalars(select(Takeover)))
    assert takeover.status == "completed"
    actions = await audit_actions(db)
    assert ("takeover.completed", new_id, new_id) in actions
    assert ("user.disabled-by-takeover", new_id, setup.admin_id) in actions


async def test_the_old_administrators_are_told_by_email_and_sms_and_the_disabled_ones_by_email(
    db, clock, sealer, client, notifier_url, tmp_path
) -> None:
    """The notifier's real kinds: each administrator gets the notice by email and SMS in their
    language, with the link that cancels; after completion the disabled ones get an email."""
    setup = await requested_takeover(db, clock, sealer, client)
    clock.advance(NOTICE)
    assert (
        await activate_from_letter(client, db, sealer, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    ).status_code == 200
    [completed] = await events(db, TakeoverCompleted)
    notifier = NotifierUnderTest.start(notifier_url, clock, sealer, tmp_path)
    for notice in setup.notices:
        await notifier.receive(notice)
    await notifier.receive(completed)
    await notifier.dispatcher.dispatch_due()

    link = f"https://selvbetjening.example.dk/overtagelse/annuller/{setup.tokens[setup.admin_id]}"
    [sms] = notifier.sms.sent
    assert sms[0] == "+4520123456" and link in sms[1] and "Selvbetjening" in sms[1]
    notice_mail, done_mail = sorted(notifier.mail.sent, key=lambda m: "overtaget" in str(m["Subject"]))
    assert notice_mail["To"] == "mette@nordlys.example" and link in notice_mail.get_content()
    assert "kan bruges fra den" in notice_mail.get_content()
    assert done_mail["To"] == "mette@nordlys.example" and "deaktiveret" in done_mail.get_content()
    await notifier.db.dispose()


def test_the_takeover_letter_states_the_notice_period_and_when_the_code_can_be_used() -> None:
    usable_from = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    for language, words in (
        ("da", ("Varslingsperiode: 72 timer", "først bruges fra den 4. marts 2026 kl. 10.30")),
        ("en", ("Notice period: 72 hours", "can be used from 4 March 2026 at 10:30")),
    ):
        letter = " ".join(
            render_credentials_letter(
                language=language,
                company_name="Nordlys",
                cvr=PARENT,
                username=f"{PARENT}-abcd",
                activation_code="ABCD-EFGH-JKMN-PQRS-TVWX",
                expires_at=usable_from + CODE_TTL,
                portal_url="https://selvbetjening.example.dk",
                takeover_usable_from=usable_from,
                takeover_notice_hours=72,
            ).split()
        )
        assert all(w in letter for w in words), letter


# --- cancelling -----------------------------------------------------------------------------------


async def test_a_cancel_link_shows_the_takeover_cancels_it_once_and_withdraws_its_login(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    token = setup.tokens[setup.admin_id]
    shown = await client.post("/v1/takeovers/lookup", json={"cancel_token": token})
    assert shown.status_code == 200, shown.text
    assert (shown.json()["cvr"], shown.json()["status"], shown.json()["cancel_link_used"]) == (PARENT, "open", False)
    assert shown.json()["applicant_name"] == "Ny Chef"

    cancelled = await client.post("/v1/takeovers/cancel", json={"cancel_token": token})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    again = await client.post("/v1/takeovers/cancel", json={"cancel_token": token})
    assert (again.status_code, problem_type(again)) == (410, "cancel-link-used")
    shown = (await client.post("/v1/takeovers/lookup", json={"cancel_token": token})).json()
    assert (shown["status"], shown["cancel_link_used"]) == ("cancelled", True)

    clock.advance(NOTICE)
    refused = await start_letter_activation(client, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    assert problem_type(refused) == "invalid-activation-code"
    [event] = await events(db, TakeoverCancelled)
    assert (str(event.by_user_id), event.user_id) == (setup.admin_id, setup.letter.user_id)
    [withdrawn] = await events(db, UserDeleted)
    assert (withdrawn.user_id, withdrawn.reason) == (setup.letter.user_id, "takeover-cancelled")
    assert ("takeover.cancelled", setup.admin_id, str(setup.letter.user_id)) in await audit_actions(db)
    assert (await client.get("/v1/me", headers=await log_in_by_email(client, db, sealer, setup.admin_username))).status_code == 200


async def test_a_wrong_or_unknown_cancel_link_is_one_answer(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    notice_id, _, secret = setup.tokens[setup.admin_id].partition(".")
    answers = [
        await client.post("/v1/takeovers/cancel", json={"cancel_token": token})
        for token in (f"{notice_id}.{secret[:-2]}xx", f"{uuid.uuid4()}.{secret}", "nonsense")
    ]
    assert {(a.status_code, problem_type(a), a.json()["detail"]) for a in answers} == {
        (404, "unknown-cancel-link", answers[0].json()["detail"])
    }
    async with db.transaction() as session:
        assert [t.status for t in await session.scalars(select(Takeover))] == ["open"]


async def test_a_logged_in_administrator_sees_and_cancels_the_open_takeover(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    [listed] = (await client.get("/v1/takeovers", headers=setup.admin)).json()
    assert (listed["cvr"], listed["status"]) == (PARENT, "open")
    assert _at(listed["usable_from"]) == setup.letter.takeover_usable_from

    cancelled = await client.post(f"/v1/takeovers/{listed['id']}/cancel", headers=setup.admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    again = await client.post(f"/v1/takeovers/{listed['id']}/cancel", headers=setup.admin)
    assert (again.status_code, problem_type(again), again.json()["takeover_status"]) == (
        409,
        "takeover-ended",
        "cancelled",
    )
    assert (await client.get("/v1/takeovers", headers=setup.admin)).json() == []
    assert ("takeover.cancelled", setup.admin_id, str(setup.letter.user_id)) in await audit_actions(db)
    # The link sent to the same administrator now finds the takeover ended.
    late = await client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]})
    assert (late.status_code, problem_type(late)) == (409, "takeover-ended")


async def test_an_administrator_of_another_company_cannot_see_or_cancel_the_takeover(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    takeover_id = (await client.get("/v1/takeovers", headers=setup.admin)).json()[0]["id"]
    created = await client.post(
        "/v1/users",
        headers=setup.admin,
        json=colleague(grants=[{"cvr": "37826111", "accounts": "all"}], functions=["user_admin"]),
    )
    _, code = await login_email(db, sealer)
    await client.post(
        "/v1/activation",
        json={"username": created.json()["username"], "activation_code": code, "password": PASSWORD},
    )
    subsidiary_admin = await log_in_by_email(client, db, sealer, created.json()["username"])
    assert (await client.get("/v1/takeovers", headers=subsidiary_admin)).json() == []
    refused = await client.post(f"/v1/takeovers/{takeover_id}/cancel", headers=subsidiary_admin)
    assert refused.status_code == 404


# --- expiry, one at a time, and the login's place -----------------------------------------------


async def test_a_takeover_whose_code_is_not_used_in_time_expires_in_the_worker(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    watch = TakeoverExpiryWatch(db=db, outbox=Outbox(messaging, clock), clock=clock)
    clock.advance(NOTICE + CODE_TTL - timedelta(seconds=1))
    assert await watch.check() == 0
    clock.advance(timedelta(seconds=1))
    assert await watch.check() == 1
    [expired] = await events(db, TakeoverExpired)
    assert expired.user_id == setup.letter.user_id
    [withdrawn] = await events(db, UserDeleted)
    assert withdrawn.reason == "takeover-expired"
    assert ("takeover.expired", str(setup.letter.user_id), str(setup.letter.user_id)) in await audit_actions(db)
    assert await watch.check() == 0


async def test_a_takeover_code_used_after_its_expiry_ends_the_takeover_at_once(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    clock.advance(NOTICE + CODE_TTL)
    late = await start_letter_activation(client, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    assert problem_type(late) == "activation-code-expired"
    assert len(await events(db, TakeoverExpired)) == 1
    async with db.transaction() as session:
        assert [t.status for t in await session.scalars(select(Takeover))] == ["expired"]


async def test_a_second_takeover_while_one_is_open_is_refused_and_allowed_once_it_ended(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    second = takeover_application(clock)
    await submit(db, clock, sealer, second)
    [rejected] = await events(db, AdministratorProvisioningRejected)
    assert (rejected.application_id, rejected.reason) == (second.application_id, "takeover-pending")
    assert len(await events(db, CredentialsIssued)) == 2  # the first administrator's and the takeover's

    await client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]})
    third = takeover_application(clock)
    await submit(db, clock, sealer, third)
    assert (await events(db, CredentialsIssued))[-1].application_id == third.application_id
    assert len(await events(db, TakeoverRequested)) == 2


async def test_the_takeovers_login_is_not_the_administrators_to_manage_nor_supports_to_resend(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    new_id = str(setup.letter.user_id)
    assert new_id not in [u["id"] for u in (await client.get("/v1/users", headers=setup.admin)).json()]
    assert (await client.get(f"/v1/users/{new_id}", headers=setup.admin)).status_code == 404
    assert (await client.delete(f"/v1/users/{new_id}", headers=setup.admin)).status_code == 404
    staff, _ = await staff_login(db, clock, sealer, client)
    resend = await client.post(f"/v1/support/users/{new_id}/resend-letter", headers=staff)
    assert (resend.status_code, problem_type(resend)) == (409, "takeover-login")
    # Support's own path stays (S3): deleting the login ends the takeover with it.
    assert (await client.delete(f"/v1/support/users/{new_id}", headers=staff)).status_code == 204
    [cancelled] = await events(db, TakeoverCancelled)
    assert cancelled.by_user_id is None
    async with db.transaction() as session:
        assert [t.status for t in await session.scalars(select(Takeover))] == ["cancelled"]


# --- no enumeration -------------------------------------------------------------------------------


async def test_activation_answers_the_same_for_a_takeovers_login_and_an_unknown_name_with_the_same_work(
    db, clock, sealer, client, monkeypatch
) -> None:
    """A wrong code for a takeover's username and any code for an unknown username: one answer,
    and the same work (one password hash and one code check each)."""
    import services.identity.activation as activation_module

    setup = await requested_takeover(db, clock, sealer, client)
    work: list[str] = []
    real_hash, real_match = PasswordHashing.hash, activation_module.code_matches
    monkeypatch.setattr(PasswordHashing, "hash", lambda self, p: work.append("hash") or real_hash(self, p))
    monkeypatch.setattr(activation_module, "code_matches", lambda c, h: work.append("match") or real_match(c, h))
    answers = []
    for username in (setup.letter.username, f"{PARENT}-zzzz"):
        work.clear()
        answer = await start_letter_activation(
            client, username, "ABCD-EFGH-JKMN-PQRS-TVWX", email=NEW_EMAIL, mobile=NEW_MOBILE
        )
        answers.append((answer.status_code, answer.json()["type"], answer.json()["detail"], list(work)))
    assert answers[0] == answers[1]
    assert answers[0][3] == ["hash", "match"]


# --- onboarding's contract --------------------------------------------------------------------------


def _form(cvr: str = PARENT, **extra: object) -> dict:
    return {
        "cvr": cvr,
        "company_name": "Nordlys",
        "contact": {"name": "Ny Chef", "email": NEW_EMAIL, "mobile": "40506070"},
        **extra,
    }


async def test_onboarding_offers_a_takeover_in_the_409s_place_and_accepts_it_as_a_takeover(
    onboarding_url, clock
) -> None:
    onboarding_db = Database(onboarding_url)
    async with onboarding_db.transaction() as session:
        session.add(KnownCustomer(cvr=PARENT, name="Nordlys", parent_cvr=None))
        session.add(KnownCustomer(cvr="37826111", name="Datter", parent_cvr=PARENT))
        session.add(KnownCustomer(cvr="22109340", name="Solsikke", parent_cvr=None))
        session.add(KnownAdministrator(user_id="u1", cvr=PARENT, status="active", since=clock.now()))
    app = create_onboarding_api(
        OnboardingSettings(database_url=onboarding_url, rate_limit_per_minute=0, applications_per_cvr=2),
        clock=clock,
    )
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as onboarding:
        offered = await onboarding.post("/v1/applications", json=_form())
        assert (offered.status_code, offered.json()["takeover_available"]) == (409, True)
        assert '"takeover": true' in offered.json()["detail"] and "notice period" in offered.json()["detail"]

        accepted = await onboarding.post("/v1/applications", json=_form(takeover=True))
        assert (accepted.status_code, accepted.json()["kind"]) == (202, "takeover"), accepted.text
        status = (await onboarding.get(f"/v1/applications/{accepted.json()['id']}")).json()
        assert status["kind"] == "takeover"
        async with onboarding_db.transaction() as session:
            value = (await session.execute(select(onboarding_messaging.outbox.c.value))).scalars().all()
        assert any('"takeover":true' in v for v in value)

        # A subsidiary held by the group's administrator is not taken over: ask them (S14).
        held = await onboarding.post("/v1/applications", json=_form("37826111", takeover=True))
        assert (held.status_code, held.json()["recovery"]) == (409, "ask-group-administrator")
        # Without an administrator, asking for a takeover is an ordinary application.
        plain = await onboarding.post("/v1/applications", json=_form("22109340", takeover=True))
        assert (plain.status_code, plain.json()["kind"]) == (202, "application")

        # Takeovers count towards the applications a CVR may have (here 2 a day).
        async with onboarding_db.transaction() as session:
            for application in await session.scalars(select(Application).where(Application.cvr == PARENT)):
                application.status = "credentials_sent"
        second = await onboarding.post("/v1/applications", json=_form(takeover=True))
        assert second.status_code == 202
        async with onboarding_db.transaction() as session:
            for application in await session.scalars(select(Application).where(Application.cvr == PARENT)):
                application.status = "credentials_sent"
        third = await onboarding.post("/v1/applications", json=_form(takeover=True))
        assert third.status_code == 429, third.text
    await onboarding_db.dispose()


# --- the notifier, minus Kafka ---------------------------------------------------------------------


@dataclass
class MailTray:
    sent: list[EmailMessage] = field(default_factory=list)

    async def send(self, message: EmailMessage) -> EmailReceipt:
        self.sent.append(message)
        return EmailReceipt(message_id=str(message["Message-ID"]), location=f"mail:{message['To']}")


@dataclass
class SmsTray:
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt:
        self.sent.append((to, text))
        return SmsReceipt(reference=reference, location=f"sms:{to}")


@dataclass
class NotifierUnderTest:
    db: Database
    clock: FrozenClock
    dispatcher: Dispatcher
    mail: MailTray
    sms: SmsTray

    @classmethod
    def start(cls, url: str, clock: FrozenClock, sealer: Sealer, tmp_path) -> NotifierUnderTest:
        db = Database(url)
        mail, sms = MailTray(), SmsTray()
        dispatcher = Dispatcher(
            db=db,
            outbox=Outbox(notifier_messaging, clock),
            clock=clock,
            sealer=sealer,
            eboks=SpoolTransport(tmp_path / "spool"),
            sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://selvbetjening.example.dk/"),
            email=mail,
            email_from=parse_mailbox("Adgang Selvbetjening <no-reply@adgang.example.dk>"),
            sms=sms,
            retry=RetryPolicy(max_attempts=3, base_s=2, max_s=60),
            lease=timedelta(seconds=20),
        )
        return cls(db, clock, dispatcher, mail, sms)

    async def receive(self, event: Event) -> None:
        async with self.db.transaction() as session:
            await Recorder(self.clock).record(session, envelope_of(event, self.clock))

