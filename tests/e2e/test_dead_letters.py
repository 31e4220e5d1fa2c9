"""A message that cannot be decoded or validated goes to `<topic>.dlq` with the reason and its
kind; the worker goes on with the next message (architecture: Kafka conventions). Every kind on
every consumed topic is covered without the broker (tests/integration/test_poison_every_topic.py);
this is the one check that the records really arrive on the broker's `.dlq` with their headers."""

from __future__ import annotations

import uuid

import pytest

from services.billing.demo import generated_companies
from services.suite import Suite
from shared.envelope import MAX_VALUE_BYTES
from shared.events import ApplicationSubmitted
from tests.support.flows import apply_once_known, wait_for_letters
from tests.support.kafka import produce, read_all
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.e2e
CVR = generated_companies(2)[1].cvr  # a company of its own: no group administrator holds it


def headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_id", event_id.encode()),
        ("ce_source", b"/tests"),
        ("ce_type", ApplicationSubmitted.TYPE.encode()),
        ("ce_specversion", b"1.0"),
        ("content-type", b"application/json"),
    ]


async def test_bad_messages_are_dead_lettered_with_a_reason_and_the_worker_goes_on(suite: Suite) -> None:
    bootstrap = suite.config.bootstrap
    topic = ApplicationSubmitted.TOPIC.name
    not_json, invalid, oversized = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    # Same key as the application below, so they share its partition and come before it.
    await produce(bootstrap, topic, key=CVR.encode(), value=b"{this is not json", headers=headers(not_json))
    await produce(bootstrap, topic, key=CVR.encode(), value=b'{"cvr": "1234"}', headers=headers(invalid))
    huge = b'{"cvr": "' + b"1" * MAX_VALUE_BYTES + b'"}'
    await produce(bootstrap, topic, key=CVR.encode(), value=huge, headers=headers(oversized))

    response = apply_once_known(suite, CVR)
    assert response.status_code == 202, response.text
    wait_for_letters(suite, CVR)  # the worker went on past both

    async def all_dead_lettered() -> dict[str, dict[str, bytes]] | None:
        records = await read_all(bootstrap, [f"{topic}.dlq"])
        found = {r.headers["ce_id"].decode(): r.headers for r in records if r.headers.get("ce_id")}
        return found if {not_json, invalid, oversized} <= found.keys() else None

    found = await wait_until_async(all_dead_lettered, deadline_s=30, what="the bad messages on the DLQ")
    assert b"not valid JSON" in found[not_json]["dlq_reason"]
    assert found[not_json]["dlq_reason_kind"] == b"invalid-json"
    assert b"invalid payload" in found[invalid]["dlq_reason"]
    assert b"cvr" in found[invalid]["dlq_reason"]
    assert found[invalid]["dlq_reason_kind"] == b"invalid-payload"
    assert found[oversized]["dlq_reason_kind"] == b"oversized"
    assert found[invalid]["dlq_consumer"] == b"identity:onboarding.applications"
    assert found[invalid]["dlq_original_topic"] == topic.encode()
    for letter in found.values():
        assert letter["dlq_at"] and letter["dlq_original_partition"].isdigit()
        assert letter["dlq_original_offset"].isdigit()
