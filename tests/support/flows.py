"""What a person does with the suite, as small steps the end-to-end tests compose."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.notifier.memo import MemoMessage, parse_memo_message
from services.notifier.sinks import ReceivedMail, ReceivedSms, read_mail, read_sms
from services.suite import Suite
from tests.support.waiting import wait_until

CODE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}(?:-[0-9A-HJKMNP-TV-Z]{4}){4}\b")
USERNAME = re.compile(r"\b\d{8}-[a-z0-9]{4}\b")
ONE_TIME_CODE = re.compile(r"(?<![\d-])\d{6}(?![\d-])")  # identity sends 6 digits
STRONG_PASSWORD = "Fjordhest-Morgenkaffe-42"


def application_body(
    cvr: str, *, mobile: str = "+4520123456", email: str = "mette@example.dk", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cvr": cvr,
        "company_name": "Testfirma A/S",
        "contact": {"name": "Mette Holm", "email": email, "mobile": mobile},
    }
    body.update(overrides)
    return body


def apply(suite: Suite, cvr: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{suite.url('onboarding')}/v1/applications", json=application_body(cvr, **kwargs), timeout=10
    )


def eboks_dir(suite: Suite, cvr: str) -> Path:
    return suite.config.var_dir / "eboks" / cvr


def letters(suite: Suite, cvr: str) -> list[Path]:
    directory = eboks_dir(suite, cvr)
    return sorted(directory.glob("*.xml")) if directory.exists() else []


@dataclass(frozen=True)
class Letter:
    path: Path
    memo: MemoMessage
    text: str
    username: str
    code: str


def read_letter(path: Path) -> Letter:
    memo = parse_memo_message(path.read_bytes())
    text = memo.content.decode()
    username = USERNAME.search(text)
    code = CODE.search(text)
    assert username and code, f"letter {path.name} has no username or code:\n{text}"
    return Letter(path=path, memo=memo, text=text, username=username.group(), code=code.group())


def wait_for_letters(suite: Suite, cvr: str, count: int = 1, *, deadline_s: float = 60) -> list[Letter]:
    paths = wait_until(
        lambda: found if len(found := letters(suite, cvr)) >= count else None,
        deadline_s=deadline_s,
        what=f"{count} letter(s) in the e-Boks of CVR {cvr}",
    )
    return [read_letter(p) for p in paths]


def application_status(suite: Suite, application_id: str) -> dict[str, Any]:
    response = httpx.get(f"{suite.url('onboarding')}/v1/applications/{application_id}", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def wait_for_status(
    suite: Suite, application_id: str, status: str, *, deadline_s: float = 60
) -> dict[str, Any]:
    return wait_until(
        lambda: s if (s := application_status(suite, application_id))["status"] == status else None,
        deadline_s=deadline_s,
        what=f"application {application_id} to reach {status}",
    )


def activate(suite: Suite, username: str, code: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{suite.url('identity')}/v1/activation",
        json={"username": username, "activation_code": code, "password": password},
        timeout=10,
    )


def sinks_dir(suite: Suite) -> Path:
    return suite.config.var_dir / "sinks"


def wait_for_sms(suite: Suite, msisdn: str, count: int = 1, *, deadline_s: float = 60) -> list[ReceivedSms]:
    """The SMS the local gateway sink received for `msisdn` (E.164), once there are `count`."""
    return wait_until(
        lambda: found if len(found := read_sms(sinks_dir(suite), msisdn)) >= count else None,
        deadline_s=deadline_s,
        what=f"{count} SMS to {msisdn}",
    )


def wait_for_mail(
    suite: Suite, address: str, count: int = 1, *, deadline_s: float = 60
) -> list[ReceivedMail]:
    """The mails the local mail sink received for `address`, once there are `count`."""
    return wait_until(
        lambda: found if len(found := read_mail(sinks_dir(suite), address)) >= count else None,
        deadline_s=deadline_s,
        what=f"{count} mail(s) to {address}",
    )


def one_time_code(text: str) -> str:
    """The one-time code in an SMS or mail text."""
    match = ONE_TIME_CODE.search(text)
    assert match, f"no one-time code in:\n{text}"
    return match.group()
