"""Attacks on a forgotten password (S7): a stranger who knows an email address or a username,
a user of another company, a colleague, and someone holding only the victim's mailbox or only
their phone. Each test here is a way through that was found and closed."""

# ruff: noqa: F811 - the identity API fixtures are imported from the integration tests and used by name

from __future__ import annotations

from tests.integration.test_login import active_admin, client, database_url, db  # noqa: F401 - fixtures
from tests.integration.test_password_reset import (  # noqa: F401 - fixtures
    EMAIL,
    problem_type,
    request_reset,
    reset_codes,
    settings,
    wrong,
)

UNKNOWN_EMAIL = "nobody@nowhere.example"


async def test_a_name_too_long_for_any_login_is_told_next_to_the_field_not_a_server_error(
    client,
) -> None:
    answer = await request_reset(client, "x" * 65)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in answer.json()["errors"]] == ["username_or_email"]
    # An email address may be longer than a username: it is still answered alike.
    long_email = "a" * 60 + "@" + "b" * 60 + ".example"
    assert (await request_reset(client, long_email)).status_code == 202
