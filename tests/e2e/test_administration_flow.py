"""S3–S7, S12–S14 end to end, as people drive it: the administrator from the letter logs in
with two factors, creates a colleague who gets an email, and support recovers a company whose
only administrator is gone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pyotp
import pytest

from services.notifier.sinks import read_mail
from services.suite import Suite
from tests.conftest import start_suite
from tests.support.flows import (
    CODE,
    STRONG_PASSWORD,
    USERNAME,
    activate,
    activate_letter,
    apply,
    create_staff,
    log_in_with_code,
    sinks_dir,
    wait_for_letters,
    wait_for_mail,
)
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARENT = "35657193"
ISSUED_TOKENS: list[str] = []  # every access and refresh token the story got, for the leak check
ADMIN_MOBILE = "+4520123456"


@pytest.fixture(scope="module")
def admin_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("admin"), database_factory, ADGANG_IDENTITY_OTP_RESEND_COOLDOWN="PT1S"
    )
    yield suite
    suite.stop()


def identity(suite: Suite) -> httpx.Client:
    return httpx.Client(base_url=suite.url("identity"), timeout=15)


def log_in(suite: Suite, username: str, *, method: str, recipient: str, deadline_s: float = 60) -> dict:
    """Password, then a code by SMS or email read from the local sink; returns the tokens."""
    tokens = log_in_with_code(suite, username, method=method, recipient=recipient, deadline_s=deadline_s)
    assert tokens.status_code == 200, tokens.text
    ISSUED_TOKENS.extend([tokens.json()["access_token"], tokens.json()["refresh_token"]])
    return tokens.json()


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_the_whole_administration_story(admin_suite: Suite) -> None:
    suite = admin_suite
    # The administrator from the letter activates and logs in with password + SMS code (S7).
    assert apply(suite, PARENT, mobile=ADMIN_MOBILE).status_code == 202
    [letter] = wait_for_letters(suite, PARENT)
    # Whoever reads the letter sets and confirms their own mobile and email (here the applicant's).
    assert activate_letter(suite, letter, mobile=ADMIN_MOBILE, email="mette@example.dk").status_code == 200
    wait_until(  # told by email that a password was set
        lambda: any("adgangskode" in m.text for m in read_mail(sinks_dir(suite), "mette@example.dk")),
        deadline_s=60,
        what="the notice that a password was set",
    )
    admin = log_in(suite, letter.username, method="sms", recipient=ADMIN_MOBILE)
    with identity(suite) as http:
        me = http.get("/v1/me", headers=bearer(admin)).json()
        assert me["mobile_confirmed"] is True and len(me["grants"]) == 4  # the parent and its group (S14)

        # An authenticator app; its code logs in once, and not twice.
        secret = http.post("/v1/me/totp", headers=bearer(admin)).json()["secret"]
        confirm = http.post(
            "/v1/me/totp/confirm", headers=bearer(admin), json={"code": pyotp.TOTP(secret).now()}
        )
        assert confirm.status_code == 200 and len(confirm.json()["recovery_codes"]) == 10
        code = _next_step_code(secret)
        for expected in (200, 401):
            challenge = http.post(
                "/v1/login", json={"username": letter.username, "password": STRONG_PASSWORD}
            ).json()
            assert "totp" in challenge["methods"]
            verdict = http.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code})
            assert verdict.status_code == expected, verdict.text

        # A colleague limited to one company, two accounts and invoices (S5, S12, S14).
        created = http.post(
            "/v1/users",
            headers=bearer(admin),
            json={
                "name": "Jonas Berg",
                "email": "jonas@nordlys.example",
                "mobile": "+4520304050",
                "grants": [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}],
                "functions": ["invoices"],
            },
        )
        assert created.status_code == 201, created.text
        [mail] = wait_for_mail(suite, "jonas@nordlys.example")  # S6: the login email
        username = USERNAME.search(mail.text)
        code_in_mail = CODE.search(mail.text)
        assert username and code_in_mail and username.group() == created.json()["username"]
    assert activate(suite, username.group(), code_in_mail.group()).status_code == 200
    colleague = log_in(suite, username.group(), method="email", recipient="jonas@nordlys.example")
    with identity(suite) as http:
        claims = http.get("/v1/me", headers=bearer(colleague)).json()
        assert claims["grants"] == [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}]
        assert claims["functions"] == ["invoices"]
        assert http.get("/v1/users", headers=bearer(colleague)).status_code == 403

        # A refresh token used twice ends the session (S7).
        fresh = http.post("/v1/token/refresh", json={"refresh_token": colleague["refresh_token"]})
        assert fresh.status_code == 200
        assert (
            http.post("/v1/token/refresh", json={"refresh_token": colleague["refresh_token"]}).status_code
            == 401
        )
        assert (
            http.post("/v1/token/refresh", json={"refresh_token": fresh.json()["refresh_token"]}).status_code
            == 401
        )

    # Support: the only administrator has left; staff delete the login, the company applies again (S3).
    staff_code = create_staff(
        suite, username="support.anna", name="Anna Support", email="anna@adgang.example", mobile="+4520999999"
    )
    assert activate(suite, "support.anna", staff_code).status_code == 200
    staff = log_in(suite, "support.anna", method="sms", recipient="+4520999999")
    with identity(suite) as http:
        logins = http.get(f"/v1/support/companies/{PARENT}/users", headers=bearer(staff)).json()
        [orphan] = [u for u in logins if u["username"] == letter.username]
        assert http.delete(f"/v1/support/users/{orphan['id']}", headers=bearer(staff)).status_code == 204
        assert http.get("/v1/me", headers=bearer(admin)).status_code == 401

    again = wait_until(
        lambda: r if (r := apply(suite, PARENT, mobile=ADMIN_MOBILE)).status_code == 202 else None,
        deadline_s=30,
        what="onboarding to learn that the administrator was deleted",
    )
    assert again.json()["status"] == "received"
    letters = wait_for_letters(suite, PARENT, 2)
    assert letters[0].username != letters[1].username

    with identity(suite) as http:
        trail = http.get("/v1/support/audit", params={"cvr": PARENT}, headers=bearer(staff)).json()
    staff_id = http_me(suite, staff)["user_id"]
    assert {("support.list-users", staff_id), ("support.delete-user", staff_id)} <= {
        (e["action"], e["actor_id"]) for e in trail
    }
    assert ("user.create", me["user_id"]) in {(e["action"], e["actor_id"]) for e in trail}


def _next_step_code(secret: str) -> str:
    """A code of the step after the enrolment's, once that step has begun (codes work once)."""
    totp = pyotp.TOTP(secret)
    enrolled_step = totp.timecode(datetime.now(UTC))
    wait_until(
        lambda: totp.timecode(datetime.now(UTC)) > enrolled_step,
        deadline_s=35,
        what="the next 30-second TOTP step",
        poll_s=0.5,
    )
    return totp.now()


def http_me(suite: Suite, tokens: dict) -> dict:
    with identity(suite) as http:
        return http.get("/v1/me", headers=bearer(tokens)).json()


async def test_no_code_password_or_token_is_readable_on_any_topic_or_in_any_log(admin_suite: Suite) -> None:
    from services.notifier.sinks import read_mail, read_sms
    from shared.kafka import all_topic_names

    secrets = {STRONG_PASSWORD}
    root = sinks_dir(admin_suite)
    texts = [m.text for d in (root / "sms").iterdir() for m in read_sms(root, d.name)]
    texts += [m.text for d in (root / "mail").iterdir() for m in read_mail(root, d.name)]
    for text in texts:
        # Exactly six digits: the one-time codes (not CVRs or phone numbers in the same texts).
        secrets |= set(re.findall(r"(?<![\d-])\d{6}(?![\d-])", text))
        secrets |= {m.group() for m in CODE.finditer(text)}
    assert len(secrets) > 3, "the story above left no messages to check"
    secrets |= set(ISSUED_TOKENS)
    records = await read_all(admin_suite.config.bootstrap, [name for name, _ in all_topic_names()])
    logs = admin_suite.logs()
    for secret in secrets:
        assert secret not in logs, "a secret was written to a log"
        for record in records:
            blob = b" ".join([record.value or b"", *record.headers.values()])
            assert secret.encode() not in blob, f"a secret is readable on {record.topic}"
