"""A message that cannot be decoded or validated goes to `<topic>.dlq` with the reason; the
worker goes on with the next message (architecture: Kafka conventions)."""

from __future__ import annotations

import uuid

import pytest

from services.billing.demo import generated_companies
from services.suite import Suite
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
    not_json, invalid = str(uuid.uuid4()), str(uuid.uuid4())
    # Same key as the application below, so they share its partition and come before it.
    await produce(bootstrap, topic, key=CVR.encode(), value=b"{this is not json", headers=headers(not_json))
    await produce(bootstrap, topic, key=CVR.encode(), value=b'{"cvr": "1234"}', headers=headers(invalid))

    response = apply_once_known(suite, CVR)
    assert response.status_code == 202, response.text
    wait_for_letters(suite, CVR)  # the worker went on past both

    async def both_dead_lettered() -> dict[str, dict[str, bytes]] | None:
        records = await read_all(bootstrap, [f"{topic}.dlq"])
        found = {r.headers["ce_id"].decode(): r.headers for r in records if r.headers.get("ce_id")}
        return found if {not_json, invalid} <= found.keys() else None

    found = await wait_until_async(both_dead_lettered, deadline_s=30, what="both bad messages on the DLQ")
    assert b"not valid JSON" in found[not_json]["dlq_reason"]
    assert b"invalid payload" in found[invalid]["dlq_reason"]
    assert b"cvr" in found[invalid]["dlq_reason"]
    assert found[invalid]["dlq_consumer"] == b"identity:onboarding.applications"
    assert found[invalid]["dlq_original_topic"] == topic.encode()
