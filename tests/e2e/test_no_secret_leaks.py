"""No activation code appears in plaintext on any topic or in any log line (architecture:
secrets on the bus are sealed; no secret appears in logs)."""

from __future__ import annotations

import pytest

from services.billing.demo import generated_companies
from services.notifier.sinks import read_mail, read_sms
from services.suite import Suite
from shared.kafka import all_topic_names
from tests.support.flows import (
    ONE_TIME_CODE,
    STRONG_PASSWORD,
    activate_letter,
    apply_once_known,
    one_time_code,
    read_letter,
    sinks_dir,
    wait_for_letters,
)
from tests.support.kafka import read_all

pytestmark = pytest.mark.e2e
CVR_OF_OUR_OWN = generated_companies(1)[0].cvr  # a company no other test applies for
MOBILE, EMAIL = "+4540506070", "leak-check@demo.example"  # the activator's own, used by no other test


async def test_no_code_or_password_appears_on_any_topic_or_in_any_log(suite: Suite) -> None:
    # An application and an activation of our own, so there is something to leak whatever
    # ran before this test.
    own = apply_once_known(suite, CVR_OF_OUR_OWN)
    assert own.status_code == 202, own.text
    [letter] = wait_for_letters(suite, CVR_OF_OUR_OWN)
    assert activate_letter(suite, letter, mobile=MOBILE, email=EMAIL).status_code == 200
    secrets: set[str] = {STRONG_PASSWORD}
    # The codes that confirmed the activator's mobile and email.
    texts = [m.text for m in read_sms(sinks_dir(suite), MOBILE)] + [
        m.text for m in read_mail(sinks_dir(suite), EMAIL)
    ]
    confirmation_codes = {one_time_code(t) for t in texts if ONE_TIME_CODE.search(t)}
    assert len(confirmation_codes) == 2
    secrets |= confirmation_codes
    for path in sorted((suite.config.var_dir / "eboks").glob("*/*.xml")):
        code = read_letter(path).code
        secrets |= {code, code.replace("-", ""), code.lower()}
    assert letter.code in secrets

    records = await read_all(suite.config.bootstrap, [name for name, _ in all_topic_names()])
    assert any(r.topic == "identity.credentials" for r in records)
    for record in records:
        blob = b" ".join([record.key or b"", record.value or b"", *record.headers.values()])
        for secret in secrets:
            assert secret.encode() not in blob, f"a secret is readable on {record.topic}"

    logs = suite.logs()
    assert "provisioned" in logs  # the logs were captured, so their silence means something
    for secret in secrets:
        assert secret not in logs, "a secret was written to a log"


def test_every_line_the_services_log_is_structured_json(suite: Suite) -> None:
    import json

    for path in sorted(suite.log_dir.glob("*-*.log")):  # the services' logs, not the broker's
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines, f"{path.name} is empty"
        for line in lines:
            entry = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= entry.keys(), (path.name, line)
