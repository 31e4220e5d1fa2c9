"""No activation code appears in plaintext on any topic or in any log line (architecture:
secrets on the bus are sealed; no secret appears in logs)."""

from __future__ import annotations

import pytest

from services.suite import Suite
from shared.kafka import all_topic_names
from tests.support.flows import STRONG_PASSWORD, activate, apply, letters, read_letter, wait_for_letters
from tests.support.kafka import read_all

pytestmark = pytest.mark.e2e
CVR = "50000001"


async def test_no_code_or_password_appears_on_any_topic_or_in_any_log(suite: Suite) -> None:
    # An application and an activation of our own, so there is something to leak.
    own = apply(suite, "22109340")
    assert own.status_code in (202, 409), own.text
    eboks = suite.config.var_dir / "eboks"
    secrets: set[str] = set()
    for cvr_dir in eboks.iterdir():
        for path in letters(suite, cvr_dir.name):
            letter = read_letter(path)
            secrets |= {letter.code, letter.code.replace("-", ""), letter.code.lower()}
    if own.status_code == 202:
        [letter] = wait_for_letters(suite, "22109340")
        activate(suite, letter.username, letter.code)
    assert secrets, "no letters were delivered, so nothing was checked"
    secrets.add(STRONG_PASSWORD)

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
