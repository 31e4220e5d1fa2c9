"""What a person does with the suite, as small steps the end-to-end tests compose."""

from __future__ import annotations

import re
import subprocess
import sys
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


def apply_once_known(suite: Suite, cvr: str, **kwargs: Any) -> httpx.Response:
    """Apply for a generated customer, which onboarding learns a moment after the demo ones."""
    return wait_until(
        lambda: r if (r := apply(suite, cvr, **kwargs)).status_code != 403 else None,
        deadline_s=30,
        what=f"onboarding to learn customer {cvr}",
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


def activate(
    suite: Suite, username: str, code: str, password: str = STRONG_PASSWORD, **details: str
) -> httpx.Response:
    """One `POST /v1/activation`: activates a colleague's or support login (200); for the login
    from the company's letter, `details` (email, mobile, name) start its activation (202)."""
    return httpx.post(
        f"{suite.url('identity')}/v1/activation",
        json={"username": username, "activation_code": code, "password": password, **details},
        timeout=10,
    )


def activate_letter(
    suite: Suite,
    letter: Letter,
    *,
    mobile: str = "+4520123456",
    email: str = "mette@example.dk",
    name: str | None = None,
    password: str = STRONG_PASSWORD,
) -> httpx.Response:
    """Activate the login from the company's letter as its reader does: the letter's username
    and code with one's own mobile and email, then the codes that arrive by SMS and by email.
    Returns the confirmation's answer (200 once the login is active)."""
    seen_sms, seen_mail = seen_ids(suite, mobile=mobile), seen_ids(suite, address=email)
    details = {"mobile": mobile, "email": email, **({"name": name} if name else {})}
    started = activate(suite, letter.username, letter.code, password, **details)
    assert started.status_code == 202, started.text
    sms_code, mail_code = new_sms_code(suite, mobile, seen_sms), new_mail_code(suite, email, seen_mail)
    return httpx.post(
        f"{suite.url('identity')}/v1/activation/{started.json()['activation_id']}/confirm",
        json={"sms_code": sms_code, "email_code": mail_code},
        timeout=10,
    )


def activated_administrator(suite: Suite, cvr: str, *, email: str, mobile: str) -> Letter:
    """The company applies with this contact, and its administrator activates the login from
    the letter in the company's e-Boks (`activate_letter`): the letter (its username)."""
    applied = apply_once_known(suite, cvr, email=email, mobile=mobile)
    assert applied.status_code == 202, applied.text
    letter = wait_for_letters(suite, cvr)[0]
    activated = activate_letter(suite, letter, mobile=mobile, email=email)
    assert activated.status_code == 200, activated.text
    return letter


def log_in_with_code(
    suite: Suite,
    username: str,
    *,
    method: str,
    recipient: str,
    password: str = STRONG_PASSWORD,
    timeout_s: float = 15,
    deadline_s: float = 60,
) -> httpx.Response:
    """Log in as a person does (S7): the password, then a one-time code sent by `method` ("sms"
    or "email") to `recipient`, read from the local sink. Returns the verification's answer
    (200 with the tokens)."""
    with httpx.Client(base_url=suite.url("identity"), timeout=timeout_s) as http:
        challenge = http.post("/v1/login", json={"username": username, "password": password})
        assert challenge.status_code == 200, challenge.text
        challenge_id = challenge.json()["challenge_id"]
        mobile, address = (recipient, None) if method == "sms" else (None, recipient)
        seen = seen_ids(suite, mobile, address)
        sent = http.post(f"/v1/login/{challenge_id}/send", json={"method": method})
        assert sent.status_code == 202, sent.text
        code = new_code(suite, seen, mobile=mobile, address=address, deadline_s=deadline_s)
        return http.post(f"/v1/login/{challenge_id}/verify", json={"code": code})


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


def received(suite: Suite, mobile: str | None = None, address: str | None = None) -> list[tuple[str, str]]:
    """(id, text) of each SMS to `mobile`, or else of each mail to `address`, the sinks hold."""
    if mobile:
        return [(m.id, m.text) for m in read_sms(sinks_dir(suite), mobile)]
    return [(m.message_id, m.text) for m in read_mail(sinks_dir(suite), address or "")]


def seen_ids(suite: Suite, mobile: str | None = None, address: str | None = None) -> set[str]:
    """The ids of the SMS to `mobile` (or of the mails to `address`) the sinks hold now: the
    messages `new_sms_code` and `new_mail_code` pass over."""
    return {message_id for message_id, _ in received(suite, mobile, address)}


def new_code(
    suite: Suite,
    seen: set[str],
    *,
    mobile: str | None = None,
    address: str | None = None,
    deadline_s: float = 60,
) -> str:
    """The one-time code of the newest message to `mobile` (an SMS) or `address` (a mail): the
    first not in `seen` that has a code, once it is there. Its id joins `seen`, so that the next
    call waits for a newer one."""
    message_id, text = wait_until(
        lambda: next(
            (
                (i, t)
                for i, t in received(suite, mobile, address)
                if i not in seen and ONE_TIME_CODE.search(t)
            ),
            None,
        ),
        deadline_s=deadline_s,
        what=f"{f'an SMS to {mobile}' if mobile else f'a mail to {address}'} with a one-time code",
    )
    seen.add(message_id)
    return one_time_code(text)


def new_sms_code(suite: Suite, mobile: str, seen: set[str]) -> str:
    """`new_code` of an SMS to `mobile`."""
    return new_code(suite, seen, mobile=mobile)


def new_mail_code(suite: Suite, address: str, seen: set[str]) -> str:
    """`new_code` of a mail to `address`."""
    return new_code(suite, seen, address=address)


def one_time_code(text: str) -> str:
    """The one-time code in an SMS or mail text."""
    match = ONE_TIME_CODE.search(text)
    assert match, f"no one-time code in:\n{text}"
    return match.group()


def create_staff(suite: Suite, *, username: str, name: str, email: str, mobile: str) -> str:
    """`adgang staff create`, as an operator runs it against the suite's identity database;
    returns the activation code it prints once."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "staff",
            "create",
            "--username",
            username,
            "--name",
            name,
            "--email",
            email,
            "--mobile",
            mobile,
        ],
        env=suite.service_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    match = CODE.search(done.stdout)
    assert match, done.stdout
    return match.group()
