"""The AsyncAPI document is generated from the event models and checked in: it cannot drift."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.asyncapi import build_asyncapi, render_asyncapi
from shared.events import EVENT_TYPES, TOPICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_the_checked_in_asyncapi_document_matches_a_fresh_generation() -> None:
    assert DOC.read_text() == render_asyncapi(), "docs/asyncapi.yaml is stale: run `make asyncapi`"


def test_every_topic_is_a_channel_and_every_event_type_a_message() -> None:
    document = build_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {t.name for t in TOPICS}
    assert {m["name"] for m in document["components"]["messages"].values()} == set(EVENT_TYPES)


def test_the_sealed_code_is_described_as_ciphertext_not_as_a_plain_string() -> None:
    schema = build_asyncapi()["components"]["schemas"]["CredentialsIssued"]
    assert schema["properties"]["activation_code"] == {"$ref": "#/components/schemas/SealedSecret"}
    yaml.safe_load(DOC.read_text())  # and the file is valid YAML
