"""The support console's reads outside identity (S3, S13): a company's applications (onboarding)
and the deliveries of its letters (notifier) are for support staff only, decided from the
verified access token alone, in development as in production."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest

from services.notifier.api import create_api as notifier_api
from services.notifier.config import NotifierSettings
from services.notifier.models import Delivery
from services.onboarding.api import create_api as onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import Application
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import generate_key
from shared.settings import Environment
from tests.support.asgi import AppTransport
from tests.support.tokens import CUSTOMER_CVR, IdentityKeys

PROBLEM = "application/problem+json"
OTHER_CVR = "22109340"
JWKS = "http://identity.test/.well-known/jwks.json"


@pytest.fixture
def keys(clock: FrozenClock) -> IdentityKeys:
    return IdentityKeys(clock)


def callers(keys: IdentityKeys) -> dict[str, dict[str, str]]:
    """Everyone who may knock, and the answer each must get."""
    return {
        "staff": keys.staff(),
        "administrator": keys.administrator(),
        "colleague": keys.colleague(),
        "support role with a company": keys.bearer(role="support", tenant=CUSTOMER_CVR),
        "no token": {},
        "not bearer": {"Authorization": "Basic c3VwcG9ydDpzdXBwb3J0"},
        "forged staff token": keys.forged_staff(),
        "expired staff token": keys.bearer(role="support", tenant=None, lifetime=timedelta(seconds=-1)),
    }


EXPECTED = {
    "staff": 200,
    "administrator": 403,
    "colleague": 403,
    "support role with a company": 403,
    "no token": 401,
    "not bearer": 401,
    "forged staff token": 401,
    "expired staff token": 401,
}


async def knock_at_once(
    client: httpx.AsyncClient, path: str, params: dict[str, str], keys: IdentityKeys, rounds: int = 3
) -> dict[str, set[int]]:
    """Every caller `rounds` times, all requests at once; the statuses each got."""
    who = callers(keys)
    order = [name for name in who for _ in range(rounds)]
    answers = await asyncio.gather(*[client.get(path, params=params, headers=who[name]) for name in order])
    statuses: dict[str, set[int]] = {}
    for name, answer in zip(order, answers, strict=True):
        statuses.setdefault(name, set()).add(answer.status_code)
        if answer.status_code != 200:
            assert answer.headers["content-type"] == PROBLEM, answer.text
            assert answer.json()["detail"]
        if answer.status_code == 403:
            assert answer.json()["type"].endswith("/support-staff-only")
        if answer.status_code == 401:
            assert answer.headers["www-authenticate"].startswith("Bearer")
    return statuses


# --- onboarding --------------------------------------------------------------------------------


async def onboarding_client(
    url: str, clock: FrozenClock, keys: IdentityKeys, environment: Environment
) -> httpx.AsyncClient:
    settings = OnboardingSettings(database_url=url, environment=environment, identity_jwks_url=JWKS)
    app = onboarding_api(settings, clock=clock, jwks_client=keys.jwks_client())
    return httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding")


async def add_applications(url: str, clock: FrozenClock) -> list[str]:
    """Three applications of the customer, an hour apart (the newest failed), one of another CVR."""
    db = Database(url)
    ids = []
    async with db.transaction() as session:
        for hours, cvr, status in (
            (3, CUSTOMER_CVR, "credentials_sent"),
            (2, OTHER_CVR, "received"),
            (1, CUSTOMER_CVR, "rejected"),
            (0, CUSTOMER_CVR, "failed"),
        ):
            at = clock.now() - timedelta(hours=hours)
            application = Application(
                id=str(uuid.uuid4()),
                cvr=cvr,
                company_name=f"Firma {cvr}",
                contact_name="Ida Bager",
                contact_email="ida@solsikke.example",
                contact_mobile="+4520304050",
                language="da",
                status=status,
                status_detail="The letter could not be delivered." if status == "failed" else None,
                submitted_at=at,
                deliver_by=at + timedelta(hours=2),
                delivered_at=at + timedelta(minutes=5) if status == "credentials_sent" else None,
                updated_at=at,
            )
            session.add(application)
            if cvr == CUSTOMER_CVR:
                ids.append(application.id)
    await db.dispose()
    return list(reversed(ids))


async def test_only_support_staff_see_a_companys_applications_also_when_everyone_asks_at_once(
    onboarding_url, clock, keys
) -> None:
    await add_applications(onboarding_url, clock)
    async with await onboarding_client(onboarding_url, clock, keys, Environment.production) as client:
        statuses = await knock_at_once(client, "/v1/support/applications", {"cvr": CUSTOMER_CVR}, keys)
    assert statuses == {name: {status} for name, status in EXPECTED.items()}


async def test_support_sees_the_companys_applications_newest_first_and_no_other_companys(
    onboarding_url, clock, keys
) -> None:
    newest_first = await add_applications(onboarding_url, clock)
    async with await onboarding_client(onboarding_url, clock, keys, Environment.development) as client:
        listed = await client.get(
            "/v1/support/applications", params={"cvr": CUSTOMER_CVR}, headers=keys.staff()
        )
        one = await client.get(
            "/v1/support/applications", params={"cvr": CUSTOMER_CVR, "limit": 1}, headers=keys.staff()
        )
        nine_digits = await client.get(
            "/v1/support/applications", params={"cvr": "123456789"}, headers=keys.staff()
        )
        without = await client.get("/v1/support/applications", headers=keys.staff())
        anonymous = await client.get("/v1/support/applications")

    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [r["id"] for r in rows] == newest_first
    assert [r["status"] for r in rows] == ["failed", "rejected", "credentials_sent"]
    assert {r["cvr"] for r in rows} == {CUSTOMER_CVR}
    assert rows[0]["status_detail"] == "The letter could not be delivered."
    assert rows[2]["delivered_at"] is not None and rows[2]["deliver_by"] is not None
    assert "contact_email" not in rows[0] and "contact_mobile" not in rows[0]
    assert [r["id"] for r in one.json()] == newest_first[:1]
    for wrong in (nine_digits, without):
        assert wrong.status_code == 422 and wrong.headers["content-type"] == PROBLEM
        assert wrong.json()["errors"][0]["field"] == "cvr"
    assert anonymous.status_code == 401  # who asks is decided before what is asked


# --- notifier ----------------------------------------------------------------------------------


async def notifier_client(
    url: str, clock: FrozenClock, keys: IdentityKeys, environment: Environment, tmp_path
) -> httpx.AsyncClient:
    settings = NotifierSettings.model_validate(
        {
            "database_url": url,
            "environment": environment,
            "identity_jwks_url": JWKS,
            "var_dir": tmp_path,
            # what production requires; nothing is sent here
            "portal_url": "https://selvbetjening.example.dk/aktiver",
            "email_smtp_host": "smtp.example.dk",
            "email_from": "Adgang <no-reply@example.dk>",
            "sms_gateway_url": "https://sms.example.dk/v1/sms",
            "sms_gateway_token": "a-gateway-token",
            "billing_document_token": "a-document-token",
            "sealing_keys": f"k1:{generate_key()}",
            "sealing_active_key_id": "k1",
        }
    )
    app = notifier_api(settings, clock=clock, jwks_client=keys.jwks_client())
    return httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://notifier")


async def add_deliveries(url: str, clock: FrozenClock) -> list[str]:
    """Two letters to the customer's e-Boks (the newest delivered), one to another company, and
    an SMS code; returns the customer's letters, newest first."""
    db = Database(url)
    letters = []
    async with db.transaction() as session:
        for minutes, kind, channel, recipient, status in (
            (30, "credentials_letter", "eboks", CUSTOMER_CVR, "failed"),
            (20, "credentials_letter", "eboks", OTHER_CVR, "delivered"),
            (15, "otp_login", "sms", "+4520304050", "delivered"),
            (10, "credentials_letter", "eboks", CUSTOMER_CVR, "delivered"),
        ):
            at = clock.now() - timedelta(minutes=minutes)
            delivery = Delivery(
                id=str(uuid.uuid4()),
                source_event_id=str(uuid.uuid4()),
                source_event_type="dk.adgang.identity.CredentialsIssued.v1",
                source_payload="{}",
                application_id=None,
                channel=channel,
                recipient=recipient,
                kind=kind,
                message_id=str(uuid.uuid4()),
                status=status,
                attempts=1,
                next_attempt_at=at,
                last_error="e-Boks refused the letter" if status == "failed" else None,
                deliver_by=at + timedelta(hours=2) if channel == "eboks" else None,
                created_at=at,
                delivered_at=at + timedelta(seconds=5) if status == "delivered" else None,
            )
            session.add(delivery)
            if recipient == CUSTOMER_CVR:
                letters.append(delivery.id)
    await db.dispose()
    return list(reversed(letters))


@pytest.mark.parametrize("environment", [Environment.production, Environment.development])
async def test_only_support_staff_read_delivery_records_in_every_environment_also_when_everyone_asks_at_once(
    notifier_url, clock, keys, tmp_path, environment
) -> None:
    await add_deliveries(notifier_url, clock)
    async with await notifier_client(notifier_url, clock, keys, environment, tmp_path) as client:
        statuses = await knock_at_once(
            client, "/v1/deliveries", {"recipient": CUSTOMER_CVR, "kind": "credentials_letter"}, keys
        )
    assert statuses == {name: {status} for name, status in EXPECTED.items()}


async def test_support_sees_the_letters_to_a_cvr_newest_first(notifier_url, clock, keys, tmp_path) -> None:
    newest_first = await add_deliveries(notifier_url, clock)
    async with await notifier_client(notifier_url, clock, keys, Environment.production, tmp_path) as client:
        letters = await client.get(
            "/v1/deliveries",
            params={"recipient": CUSTOMER_CVR, "kind": "credentials_letter"},
            headers=keys.staff(),
        )
    assert letters.status_code == 200, letters.text
    rows = letters.json()
    assert [r["id"] for r in rows] == newest_first
    assert [(r["status"], r["channel"], r["recipient"]) for r in rows] == [
        ("delivered", "eboks", CUSTOMER_CVR),
        ("failed", "eboks", CUSTOMER_CVR),
    ]
    assert rows[1]["last_error"] == "e-Boks refused the letter" and rows[0]["delivered_at"] is not None


async def test_the_development_sinks_still_answer_without_a_token(
    notifier_url, clock, keys, tmp_path
) -> None:
    async with await notifier_client(notifier_url, clock, keys, Environment.development, tmp_path) as client:
        sms = await client.get("/dev/sms/+4520304050")
        letters = await client.get(f"/dev/eboks/{CUSTOMER_CVR}")
    assert (sms.status_code, sms.json()) == (200, [])
    assert (letters.status_code, letters.json()) == (200, [])
