"""`adgang staff create --language`: a support login's codes and notices in English, or Danish
when not said (S13; issue 10 item 2)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from services.cli import main
from services.identity.models import User
from shared.db import Database


def languages_of(url: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        db = Database(url)
        try:
            async with db.transaction() as session:
                return {u.username: u.language for u in await session.scalars(select(User))}
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_staff_create_stores_the_language_given_and_danish_when_none_is(
    database_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_factory("identity")
    monkeypatch.setenv("ADGANG_IDENTITY_DATABASE_URL", url)

    def create(username: str, n: int, *extra: str) -> int:
        return main(
            ["staff", "create", "--username", username, "--name", username.title()]
            + ["--email", f"{username}@support.example", "--mobile", f"20 30 40 5{n}", *extra]
        )

    assert create("support.anna", 1, "--language", "en") == 0
    assert create("support.bo", 2) == 0
    assert languages_of(url) == {"support.anna": "en", "support.bo": "da"}

    with pytest.raises(SystemExit) as refused:
        create("support.carl", 3, "--language", "fr")
    assert refused.value.code == 2
    assert "invalid choice: 'fr' (choose from" in capsys.readouterr().err
    assert "support.carl" not in languages_of(url)
