"""`adgang staff create` takes only a username a password reset can name (S13, S5): one with
a space, a line break or an `@` inside, or longer than the column, is refused and no login is
made. Such a login could log in, but `POST /v1/password-resets` refuses its username (no space
or line break inside) or takes it for an email address (an `@`)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from services.cli import main
from services.identity.models import User
from services.identity.schemas import ResetIn
from shared.db import Database


def usernames_in(url: str) -> set[str]:
    async def read() -> set[str]:
        db = Database(url)
        try:
            async with db.transaction() as session:
                return set(await session.scalars(select(User.username)))
        finally:
            await db.dispose()

    return asyncio.run(read())


def create(username: str) -> int:
    return main(
        ["staff", "create", "--username", username, "--name", "Anne Hansen"]
        + ["--email", "anne@support.example", "--mobile", "20 30 40 50"]
    )


@pytest.mark.parametrize(
    "username",
    ["anne hansen", "anne\nhansen", "anne\u2028hansen", "anne@support", "a" * 65],
    ids=["space", "line-break", "line-separator", "at-sign", "too-long"],
)
def test_staff_create_refuses_a_username_a_password_reset_cannot_name(
    username: str, database_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory("identity")
    monkeypatch.setenv("ADGANG_IDENTITY_DATABASE_URL", url)

    assert create(username) == 1
    err = capsys.readouterr().err
    assert "adgang staff create: username:" in err, err
    assert usernames_in(url) == set()


def test_every_username_staff_create_takes_a_password_reset_takes(
    database_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory("identity")
    monkeypatch.setenv("ADGANG_IDENTITY_DATABASE_URL", url)

    assert create("  Support.Anne  ") == 0, capsys.readouterr().err
    (kept,) = usernames_in(url)
    assert kept == "support.anne"
    assert ResetIn(username_or_email=kept).username_or_email == kept
    with pytest.raises(ValidationError):
        ResetIn(username_or_email="anne hansen")
