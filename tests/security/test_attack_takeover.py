"""Attacks on the takeover of a company's administration (issue 10, item 3; beyond S3, S2): what
got through, each kept out by the fix it came with. Identity's real handlers and HTTP API on the
database under test; requests that race are fired in parallel."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select
from uvicorn.protocols.utils import get_path_with_query_string

from services.identity.models import Takeover, User
from services.notifier.letters import cancel_link
from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import KnownAdministrator, KnownCustomer
from services.onboarding.models import messaging as onboarding_messaging
from services.onboarding.projections import Projections
from shared.clock import SystemClock
from shared.db import Database
from shared.events import (
    AdministratorProvisioningRejected,
    CredentialsIssued,
    DeliveryFailed,
    TakeoverNoticeIssued,
)
from shared.logs import JsonFormatter, install_scrubbing
from shared.messaging import Outbox
from tests.integration.test_activation import PASSWORD, envelope_of, problem_type
from tests.integration.test_administration import (
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.integration.test_takeover import (
    PARENT,
    events,
    requested_takeover,
    submit,
    takeover_application,
)
from tests.support.asgi import AppTransport


async def _user_administrator_colleague(db, sealer, client, admin: dict) -> tuple[str, dict]:
    """Kim: a colleague (role user) with the user administration function, activated and logged in."""
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
    username = created.json()["username"]
    activated = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return created.json()["id"], await log_in_by_email(client, db, sealer, username)


# --- a company administered by colleagues only --------------------------------------------------


async def test_a_company_whose_user_administrators_are_colleagues_gets_no_administrator_behind_their_backs(
    db, clock, sealer, client
) -> None:
    """The first administrator left and deleted their own login, leaving a colleague with user
    administration. An application must not give whoever reads the e-Boks an administrator at
    once, untold to that colleague: it is a takeover, with its notice, or nothing."""
    first = await log_in_by_email(client, db, sealer, await activated_group_admin(db, clock, sealer, client))
    kim_id, _kim = await _user_administrator_colleague(db, sealer, client, first)
    own_id = (await client.get("/v1/me", headers=first)).json()["user_id"]
    gone = await client.delete(f"/v1/users/{own_id}", headers=first)
    assert gone.status_code == 204, gone.text

    plain = takeover_application(clock)
    plain = plain.model_copy(update={"takeover": False})
    asked = takeover_application(clock)
    await asyncio.gather(submit(db, clock, sealer, plain), submit(db, clock, sealer, asked))

    letters = await events(db, CredentialsIssued)
    last = letters[-1]
    # No letter whose code works at once: the only new letter is the takeover's.
    assert [letter.takeover_usable_from is not None for letter in letters[1:]] == [True], letters
    assert [str(n.user_id) for n in await events(db, TakeoverNoticeIssued)] == [kim_id]
    rejected = await events(db, AdministratorProvisioningRejected)
    assert [(r.application_id, r.reason) for r in rejected] == [(plain.application_id, "admin-exists")]
    async with db.transaction() as session:
        pending = await session.scalar(select(User).where(User.application_id == str(plain.application_id)))
        open_ones = list(await session.scalars(select(Takeover).where(Takeover.status == "open")))
    assert pending is None
    assert [t.user_id for t in open_ones] == [str(last.user_id)]


# --- the cancel link's token --------------------------------------------------------------------


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """uvicorn's access logger as `adgang api` runs it (access_log on, our JSON lines, every
    record scrubbed), into a buffer."""
    previous = logging.getLogRecordFactory()
    install_scrubbing()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("uvicorn.access")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        logging.setLogRecordFactory(previous)


async def test_the_portals_access_log_does_not_keep_the_cancel_links_token(
    db, clock, sealer, client, access_log
) -> None:
    """The link in the notice is a path (`/overtagelse/annuller/<token>`): the portal's access log
    line for each visit would hand anyone who reads the logs a working cancel link."""
    setup = await requested_takeover(db, clock, sealer, client)
    token = setup.tokens[setup.admin_id]
    link = httpx.URL(cancel_link("https://selvbetjening.example", token))
    for method in ("GET", "POST"):  # the page, then its button
        scope = {
            "type": "http",
            "method": method,
            "path": link.path,
            "raw_path": link.raw_path,  # what uvicorn logs (0.55 and later)
            "query_string": b"",
            "http_version": "1.1",
        }
        # As uvicorn's HTTP protocols log a request.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "203.0.113.9:51234", method, get_path_with_query_string(scope), "1.1", 200
        )

    logged = access_log.getvalue()
    notice_id, _, secret = token.partition(".")
    assert logged.count("/overtagelse/annuller/") == 2, logged
    assert secret not in logged
    assert notice_id in logged  # which notice it was stays readable
    # And the link still works: the log was masked, not the token.
    shown = await client.post("/v1/takeovers/lookup", json={"cancel_token": token})
    assert shown.status_code == 200, shown.text


# --- the letters a CVR may have -----------------------------------------------------------------


@pytest.fixture
async def onboarding_api(onboarding_url: str) -> AsyncIterator[tuple[Database, httpx.AsyncClient]]:
    """Onboarding's real API on its own database, knowing the company and its active administrator."""
    url = onboarding_url
    database = Database(url)
    async with database.transaction() as session:
        session.add(KnownCustomer(cvr=PARENT, name="Nordlys A/S", parent_cvr=None))
        session.add(KnownAdministrator(user_id=str(uuid.uuid4()), cvr=PARENT, status="active", since=datetime.now(UTC)))
    app = create_onboarding_api(OnboardingSettings(database_url=url, rate_limit_per_minute=0))
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as api:
        yield database, api
    await database.dispose()


async def test_takeovers_whose_letters_fail_still_count_towards_the_cvrs_applications(
    onboarding_api, clock
) -> None:
    """Identity tells the administrators by email and SMS when it records the takeover, before the
    letter is delivered. A takeover whose letter then fails (a company outside digital post, a
    slow e-Boks) must count like one delivered, or a stranger could have the administrators
    texted again and again without end."""
    database, api = onboarding_api
    asked = {
        "cvr": PARENT,
        "company_name": "Nordlys",
        "contact": {"name": "Ny Chef", "email": "ny@nordlys.example", "mobile": "+4540506070"},
        "takeover": True,
    }
    for attempt in range(3):
        accepted = await api.post("/v1/applications", json=asked)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["kind"] == "takeover"
        failed = DeliveryFailed(
            delivery_id=uuid.uuid4(),
            source_event_id=f"e{attempt}",
            source_event_type="CredentialsIssued",
            application_id=uuid.UUID(accepted.json()["id"]),
            channel="eboks",
            recipient=PARENT,
            message_id=f"m{attempt}",
            attempts=8,
            reason="the company is not registered for digital post",
            failed_at=clock.now(),
        )
        async with database.transaction() as session:
            await Projections(outbox=Outbox(onboarding_messaging, SystemClock())).on_delivery_failed(
                session, envelope_of(failed, clock)
            )

    answers = await asyncio.gather(*(api.post("/v1/applications", json=asked) for _ in range(3)))
    assert [a.status_code for a in answers] == [429, 429, 429], [a.text for a in answers]


# --- a cancel link outliving the authority it was sent for --------------------------------------


async def test_a_cancel_link_stops_working_when_its_administrator_no_longer_administers_the_company(
    db, clock, sealer, client
) -> None:
    """Kim was told as a colleague with user administration, then lost it: a disabled login, or
    one whose user administration was taken away, no longer decides over the company's
    administration, by the link it kept any more than in the portal."""
    setup = await requested_takeover(db, clock, sealer, client, with_colleague_admin=True)
    kim_id = next(user_id for user_id in setup.tokens if user_id != setup.admin_id)
    disabled = await client.post(f"/v1/users/{kim_id}/disable", headers=setup.admin)
    assert disabled.status_code == 200, disabled.text

    token = {"cancel_token": setup.tokens[kim_id]}
    shown, *cancelled = await asyncio.gather(
        client.post("/v1/takeovers/lookup", json=token),
        *(client.post("/v1/takeovers/cancel", json=token) for _ in range(3)),
    )
    assert [a.status_code for a in (shown, *cancelled)] == [403] * 4, [a.text for a in (shown, *cancelled)]
    assert {problem_type(a) for a in (shown, *cancelled)} == {"cancel-link-revoked"}
    async with db.transaction() as session:
        assert [t.status for t in await session.scalars(select(Takeover))] == ["open"]

    # The administrator who still administers the company cancels with their own link.
    mine = await client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]})
    assert mine.status_code == 200, mine.text
