"""No activation code appears in plaintext on any topic or in any log line (architecture:
secrets on the bus are sealed; no secret appears in logs)."""

from __future__ import annotations

import pytest

from services.billing.demo import generated_companies
from services.suite import Suite
from shared.kafka import all_topic_names
from tests.support.flows import STRONG_PASSWORD, activate, apply, read_letter, wait_for_letters
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
CVR_OF_OUR_OWN = generated_companies(1)[0].cvr  # a company no other test applies for


async def test_no_code_or_password_appears_on_any_topic_or_in_any_log(suite: Suite) -> None:
    # An application and an activation of our own, so there is something to leak whatever
    # ran before this test.
    own = wait_until(
        lambda: r if (r := apply(suite, CVR_OF_OUR_OWN)).status_code != 403 else None,
        deadline_s=30,
        what="onboarding to learn the generated customers",
    )
    assert own.status_code == 202, own.text
    [letter] = wait_for_letters(suite, CVR_OF_OUR_OWN)
    assert activate(suite, letter.username, letter.code).status_code == 200
    secrets: set[str] = {STRONG_PASSWORD}
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
