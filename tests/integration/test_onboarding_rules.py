"""S1, S3: who may apply, decided by onboarding's own projection, over its real HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.onboarding.api import create_api
from services.onboarding.bootstrap import OnboardingParts, build
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import KnownAdministrator, KnownCustomer
from shared.db import Database
from tests.support.asgi import AppTransport

CVR = "22109340"


def body(cvr: str = CVR) -> dict:
    return {
        "cvr": cvr,
        "company_name": "Bageriet",
        "contact": {"name": "Ida", "email": "ida@example.dk", "mobile": "20304050"},
    }


@pytest.fixture
def database_url(onboarding_url: str) -> str:
    return onboarding_url


async def _client(database_url: str, **settings: object) -> httpx.AsyncClient:
    app = create_api(OnboardingSettings(database_url=database_url, **settings))
    return httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding")


@pytest.fixture
async def customer_known(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    async with db.transaction() as session:
        session.add(KnownCustomer(cvr=CVR, name="Bageriet Solsikke ApS", parent_cvr=None))
    yield db
    await db.dispose()


@pytest.fixture
async def worker(database_url: str) -> AsyncIterator[OnboardingParts]:
    """Onboarding's parts as its worker builds them."""
    parts = build(OnboardingSettings(database_url=database_url))
    yield parts
    await parts.db.dispose()


async def test_a_second_application_while_the_first_is_in_flight_is_refused(
    database_url, customer_known
) -> None:
    async with await _client(database_url, rate_limit_per_minute=0) as client:
        first = await client.post("/v1/applications", json=body())
        second = await client.post("/v1/applications", json=body())
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json()["type"].endswith("/application-pending")
    assert first.json()["id"] not in second.text  # another applicant's id is not handed out


async def test_the_application_is_stored_with_its_event_in_one_transaction(
    database_url, customer_known
) -> None:
    from sqlalchemy import select

    from services.onboarding.models import messaging

    async with await _client(database_url, rate_limit_per_minute=0) as client:
        accepted = (await client.post("/v1/applications", json=body())).json()
    async with customer_known.transaction() as session:
        rows = (await session.execute(select(messaging.outbox))).mappings().all()
    assert len(rows) == 1
    assert rows[0]["topic"] == "onboarding.applications" and rows[0]["key"] == CVR
    assert accepted["id"] in rows[0]["value"]
    assert '"mobile":"+4520304050"' in rows[0]["value"]  # normalised to E.164


async def test_a_company_with_an_active_administrator_is_told_to_contact_support(
    database_url, customer_known
) -> None:
    async with customer_known.transaction() as session:
        session.add(KnownAdministrator(user_id="u1", cvr=CVR, status="active", since=datetime.now(UTC)))
    async with await _client(database_url, rate_limit_per_minute=0) as client:
        response = await client.post("/v1/applications", json=body())
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith("/admin-exists")
    assert "support deletes the old login" in problem["detail"]


async def test_too_many_applications_from_one_address_get_429_with_retry_after(
    database_url, customer_known
) -> None:
    async with await _client(database_url, rate_limit_per_minute=2) as client:
        answers = [await client.post("/v1/applications", json=body("35657193")) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [403, 403]
    assert answers[2].status_code == 429
    assert int(answers[2].headers["retry-after"]) >= 1
    assert answers[2].json()["type"].endswith("/rate-limited")


async def test_an_application_never_provisioned_fails_at_its_deadline_and_the_company_may_apply_again(
    database_url, customer_known
) -> None:
    """S2: no letter within 2 hours means something is wrong; say so, and do not block the CVR."""
    from datetime import timedelta

    from sqlalchemy import select

    from services.onboarding.models import messaging
    from shared.clock import FrozenClock

    async with await _client(database_url, rate_limit_per_minute=0) as client:
        first = (await client.post("/v1/applications", json=body())).json()
        # After the application: its deadline is then at most 2 hours from the clock's start.
        clock = FrozenClock(datetime.now(UTC))
        parts = build(OnboardingSettings(database_url=database_url), clock=clock)  # as the worker's
        try:
            assert await parts.deadline_watch.check() == 0
            clock.advance(timedelta(hours=2, seconds=1))
            assert await parts.deadline_watch.check() == 1
            assert await parts.deadline_watch.check() == 0
        finally:
            await parts.db.dispose()
        status = (await client.get(f"/v1/applications/{first['id']}")).json()
        again = await client.post("/v1/applications", json=body())
    assert status["status"] == "failed" and "apply again" in status["status_detail"]
    assert again.status_code == 202
    async with customer_known.transaction() as session:
        values = (await session.execute(select(messaging.outbox.c.value))).scalars().all()
    assert sum('"reason":"deadline-missed"' in v for v in values) == 1


def _envelope(event):
    import uuid as _uuid

    from shared.envelope import decode, encode

    record = encode(event, event_id=str(_uuid.uuid4()), time=datetime.now(UTC))
    return decode(topic=record.topic, headers=record.headers, value=record.value)


def _eboks_letter(outcome, application_id: str, **details):
    """The notifier's `outcome` (DeliverySucceeded, DeliveryFailed) of the company's e-Boks
    letter for the application, in its envelope."""
    import uuid as _uuid

    return _envelope(
        outcome(
            delivery_id=_uuid.uuid4(),
            source_event_id="e1",
            source_event_type="t",
            application_id=_uuid.UUID(application_id),
            channel="eboks",
            recipient=CVR,
            message_id="m1",
            **details,
        )
    )


def _administrator_deleted(user_id, application_id: str, reason: str, deleted_at: datetime):
    """Identity's word that the application's administrator was deleted, in its envelope."""
    import uuid as _uuid

    from shared.events import UserDeleted

    return _envelope(
        UserDeleted(
            user_id=user_id,
            tenant_cvr=CVR,
            role="administrator",
            reason=reason,
            application_id=_uuid.UUID(application_id),
            deleted_at=deleted_at,
        )
    )


async def test_a_letter_that_cannot_be_delivered_fails_the_application_and_withdraws_its_login(
    database_url, customer_known, worker
) -> None:
    """The application fails with advice, ApplicationFailed goes out (identity withdraws the
    pending login), and the company can apply again: a login never activated blocks nobody."""
    import uuid as _uuid

    from sqlalchemy import select

    from services.onboarding.models import messaging
    from services.onboarding.worker import handlers
    from shared.events import DeliveryFailed, UserCreated, UserDeleted

    on = handlers(worker)  # what the worker calls for each event

    async with await _client(database_url, rate_limit_per_minute=0) as client:
        accepted = (await client.post("/v1/applications", json=body())).json()
        user_id = _uuid.uuid4()
        now = datetime.now(UTC)
        async with customer_known.transaction() as session:
            await on[UserCreated](
                session,
                _envelope(
                    UserCreated(
                        user_id=user_id,
                        tenant_cvr=CVR,
                        username=f"{CVR}-abcd",
                        name="Ida",
                        email="ida@example.dk",
                        mobile="+4520304050",
                        role="administrator",
                        grants=[],
                        functions=["user_admin"],
                        application_id=_uuid.UUID(accepted["id"]),
                        created_at=now,
                    )
                ),
            )
            await on[DeliveryFailed](
                session,
                _eboks_letter(DeliveryFailed, accepted["id"], attempts=8, reason="503", failed_at=now),
            )
        status = (await client.get(f"/v1/applications/{accepted['id']}")).json()
        assert status["status"] == "failed" and "apply again" in status["status_detail"]

        async with customer_known.transaction() as session:
            values = (await session.execute(select(messaging.outbox.c.value))).scalars().all()
            assert any('"reason":"delivery-failed"' in v for v in values)
            await on[UserDeleted](
                session, _administrator_deleted(user_id, accepted["id"], "credentials-undeliverable", now)
            )
        again = await client.post("/v1/applications", json=body())
    assert again.status_code == 202, again.text


async def test_a_deleted_administrator_whose_letter_was_delivered_no_longer_blocks_the_company(
    database_url, customer_known, worker
) -> None:
    """S3: support deletes the orphaned, activated login; the company then applies again."""
    import uuid as _uuid

    from services.onboarding.worker import handlers
    from shared.events import DeliverySucceeded, UserActivated, UserDeleted

    on = handlers(worker)  # what the worker calls for each event

    async with await _client(database_url, rate_limit_per_minute=0) as client:
        accepted = (await client.post("/v1/applications", json=body())).json()
        now = datetime.now(UTC)
        user_id = _uuid.uuid4()
        async with customer_known.transaction() as session:
            await on[UserActivated](
                session,
                _envelope(
                    UserActivated(user_id=user_id, tenant_cvr=CVR, role="administrator", activated_at=now)
                ),
            )
            await on[DeliverySucceeded](
                session, _eboks_letter(DeliverySucceeded, accepted["id"], attempts=1, delivered_at=now)
            )
        assert (await client.post("/v1/applications", json=body())).status_code == 409
        async with customer_known.transaction() as session:
            await on[UserDeleted](
                session, _administrator_deleted(user_id, accepted["id"], "deleted-by-support", now)
            )
        again = await client.post("/v1/applications", json=body())
    assert again.status_code == 202, again.text


async def test_the_database_itself_refuses_a_second_application_in_flight(
    database_url, customer_known
) -> None:
    """The partial unique index holds even if two requests pass the check at the same time."""
    from sqlalchemy.exc import IntegrityError

    from services.onboarding.models import Application

    now = datetime.now(UTC)

    def row(i: str, status: str) -> Application:
        return Application(
            id=i,
            cvr=CVR,
            company_name="x",
            contact_name="x",
            contact_email="x@example.dk",
            contact_mobile="+4520304050",
            language="da",
            status=status,
            submitted_at=now,
            deliver_by=now,
            updated_at=now,
        )

    async with customer_known.transaction() as session:
        session.add_all([row("a", "failed"), row("b", "credentials_sent"), row("c", "received")])
    with pytest.raises(IntegrityError):
        async with customer_known.transaction() as session:
            session.add(row("d", "provisioning"))
