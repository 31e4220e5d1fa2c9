"""While the database cannot be reached, every API answers 503 problem+json with `Retry-After`
and its readiness names the database (issue 13, outages): never a 500, never a stack trace in
the log. On PostgreSQL the server is gone (a closed port); on SQLite the database file cannot
be opened any more (its directory gone from under the process)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from services.portal.i18n import load_texts
from services.registry import SERVICES
from shared.db import database_unavailable, migrate
from tests.conftest import BACKEND
from tests.support.asgi import AppTransport
from tests.support.flows import application_body
from tests.support.ports import free_ports

PROBLEM = "application/problem+json"


@pytest.fixture
def unreachable(service: str, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """The service's database URL and the fault that makes it unreachable once the app is built."""
    if BACKEND == "postgres":
        (port,) = free_ports(1)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{service}", lambda: None
    directory = tmp_path / service
    url = f"sqlite+aiosqlite:///{directory / 'service.db'}"
    migrate(SERVICES[service].migrations, url)

    def take_away() -> None:  # the disk the database lives on is gone
        shutil.rmtree(directory)
        directory.write_text("not a directory")

    return url, take_away


async def answers(
    service: str, url: str, fault: Callable[[], None], tmp_path: Path, requests: list[tuple[str, str, object]]
) -> list[httpx.Response]:
    parts = SERVICES[service]
    settings = parts.settings_type()(database_url=url, var_dir=tmp_path / f"var-{service}")
    app = importlib.import_module(f"services.{service}.api").create_api(settings)
    fault()
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url=f"http://{service}") as http:
        return [await http.request(method, path, json=body) for method, path, body in requests]


DATABASE_ROUTES: dict[str, list[tuple[str, str, object]]] = {
    "onboarding": [
        ("GET", f"/v1/applications/{uuid.uuid4()}", None),
        ("POST", "/v1/applications", application_body("22109340")),
    ],
    "identity": [("POST", "/v1/login/unlock", {"username": "22109340-abcd"})],
}


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_api_answers_503_with_retry_after_and_readiness_names_the_database(
    service: str, unreachable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, fault = unreachable
    routes = DATABASE_ROUTES.get(service, [])
    with caplog.at_level(logging.INFO):
        *refused, ready = await answers(service, url, fault, tmp_path, [*routes, ("GET", "/readyz", None)])

    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["retry-after"] == "5"
        problem = answer.json()
        assert problem["type"].endswith("/service-unavailable")
        assert problem["retry_after"] == 5
        assert "database" in problem["detail"]
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    # An outage is a warning without a trace, not an unhandled error.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    if refused:
        assert any("database unavailable" in r.getMessage() for r in caplog.records)


def test_what_counts_as_the_database_being_away() -> None:
    # A live connection cut by a server shutting down: SQLAlchemy's generic DBAPIError, marked
    # invalidated, around the driver's adapted error, around asyncpg's AdminShutdownError.
    from asyncpg.exceptions import AdminShutdownError, CannotConnectNowError, TooManyConnectionsError

    adapted = AsyncAdapt_asyncpg_dbapi.Error("terminating connection due to administrator command")
    adapted.__cause__ = AdminShutdownError("terminating connection due to administrator command")
    assert database_unavailable(DBAPIError("SELECT 1", None, adapted, connection_invalidated=True))
    assert database_unavailable(DBAPIError("SELECT 1", None, adapted, connection_invalidated=False))
    # Raised as they are while a connection is opened.
    assert database_unavailable(ConnectionRefusedError(111, "Connect call failed"))
    assert database_unavailable(CannotConnectNowError("the database system is starting up"))
    assert database_unavailable(TooManyConnectionsError("sorry, too many clients already"))
    assert database_unavailable(OperationalError("BEGIN", None, Exception("database is locked")))
    # What retrying will not mend is not an outage.
    assert not database_unavailable(IntegrityError("INSERT", None, Exception("duplicate key")))
    assert not database_unavailable(ProgrammingError("SELECT", None, Exception("syntax error")))
    assert not database_unavailable(ValueError("bad input"))


def test_an_sqlite_error_in_the_statement_is_not_an_outage() -> None:
    # SQLAlchemy calls every sqlite3.OperationalError an OperationalError, whether the database
    # cannot be opened or is busy (an outage) or the statement names a table or column that
    # does not exist (a bug, or a migration not run): only the first kind is an outage.
    import sqlite3

    def sqlite_error(sql: str, path: str = ":memory:") -> sqlite3.Error:
        try:
            sqlite3.connect(path).execute(sql)
        except sqlite3.Error as error:
            return error
        raise AssertionError("the statement did not fail")

    missing_table = sqlite_error("SELECT * FROM rate_limit_hits")
    assert not database_unavailable(OperationalError("SELECT", None, missing_table))
    missing_file = sqlite_error("SELECT 1", "/nonexistent-directory/service.db")
    assert database_unavailable(OperationalError("SELECT", None, missing_file))
    disk_full = sqlite3.OperationalError("database or disk is full")
    disk_full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL: waits, as on PostgreSQL
    assert database_unavailable(OperationalError("INSERT", None, disk_full))


async def test_a_missing_table_is_a_500_not_a_503(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bug must not hide behind "try again in 5 seconds": a table the code needs and the
    database lacks (a migration not run) is a 500 logged with its trace."""
    if BACKEND == "postgres":
        pytest.skip("PostgreSQL reports a missing table as a ProgrammingError, covered above")
    import sqlite3

    directory = tmp_path / "onboarding"
    directory.mkdir()
    url = f"sqlite+aiosqlite:///{directory / 'service.db'}"
    await asyncio.to_thread(migrate, SERVICES["onboarding"].migrations, url)

    def drop_table() -> None:
        with sqlite3.connect(directory / "service.db") as connection:
            connection.execute("DROP TABLE applications")

    settings = SERVICES["onboarding"].settings_type()(database_url=url, var_dir=tmp_path / "var")
    app = importlib.import_module("services.onboarding.api").create_api(settings)
    drop_table()
    transport = AppTransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(transport=transport, base_url="http://onboarding") as http:
            answer = await http.get(f"/v1/applications/{uuid.uuid4()}")
    assert answer.status_code == 500, answer.text
    assert "retry-after" not in answer.headers
    assert any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("service", ["portal"])
async def test_the_portal_shows_a_person_a_page_asking_to_try_again(service: str, unreachable, tmp_path: Path) -> None:
    """The portal answers people, in their language: while its database is away a page asks
    them to try again (503 with Retry-After), as when a service does not answer, never a
    problem+json document in a browser."""
    url, fault = unreachable
    settings = SERVICES[service].settings_type()(database_url=url, var_dir=tmp_path / "var")
    app = importlib.import_module("services.portal.api").create_api(settings)
    fault()
    transport = AppTransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal") as browser:
        browser.cookies.set(settings.session_cookie, "a-session-cookie")
        answers = await asyncio.gather(*(browser.get("/", headers={"Accept": "text/html"}) for _ in range(3)))
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["retry-after"] == "5"
        assert answer.headers["cache-control"] == "no-store"
        # A link that asks for the same page again (tests/browser/test_service_unavailable.py).
        assert f'<a href="/">{load_texts()["da"].gettext("error.try-again")}</a>' in answer.text


def test_a_cancelled_query_is_not_an_outage() -> None:
    # 57014 (statement_timeout, pg_cancel_backend) is an OperatorInterventionError to asyncpg and
    # an OperationalError to SQLAlchemy, yet the same query would time out again for ever: it
    # fails like any other error, while a server shutting down (57P01) is still waited out.
    from asyncpg.exceptions import AdminShutdownError, QueryCanceledError

    cancelled = Exception("adapted")
    cancelled.__cause__ = QueryCanceledError("canceling statement due to statement timeout")
    assert not database_unavailable(OperationalError("SELECT", None, cancelled))
    assert not database_unavailable(DBAPIError("SELECT", None, cancelled, connection_invalidated=False))
    shutting_down = Exception("adapted")
    shutting_down.__cause__ = AdminShutdownError("terminating connection due to administrator command")
    assert database_unavailable(OperationalError("SELECT", None, shutting_down))


@pytest.mark.parametrize("service", ["portal"])
@pytest.mark.parametrize(
    ("path", "link"),
    [("/log-ind", True), ("/glemt-adgangskode", True), ("/log-ud", False), ("/profil/sessioner/afslut-andre", False)],
)
async def test_the_try_again_link_asks_only_for_a_page_there_is(
    service: str, path: str, link: bool, unreachable, tmp_path: Path
) -> None:
    """A form sent while the database is away gets the 'try again' page; its link asks for the
    same path afresh, which for a form's page shows the form again. An action that is only ever
    sent (logging out, ending the other sessions) has no page of its own: the link would only
    lead to 'page not found', so there is none, and the way back to the start stays."""
    url, fault = unreachable
    settings = SERVICES[service].settings_type()(database_url=url, var_dir=tmp_path / "var")
    app = importlib.import_module("services.portal.api").create_api(settings)
    fault()
    try_again = load_texts()["da"].gettext("error.try-again")
    transport = AppTransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal") as browser:
        browser.cookies.set(settings.session_cookie, "a-session-cookie")
        answer = await browser.post(path, data={"csrf_token": "x"}, headers={"Accept": "text/html"})
        assert answer.status_code == 503, answer.text
        assert (f'<a href="{path}">{try_again}</a>' in answer.text) is link, answer.text
        if link:
            followed = await browser.get(path, headers={"Accept": "text/html"})
            assert followed.status_code not in (404, 405), followed.text
        else:
            assert f">{try_again}</a>" not in answer.text, answer.text
