"""The AsyncAPI 3.0 document of every topic, generated from the event models.

`adgang asyncapi` writes `docs/asyncapi.yaml`; a test fails when the checked-in file differs
from a fresh generation, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import yaml

from shared.events import EVENT_TYPES, TOPICS, Event


def _message_name(model: type[Event]) -> str:
    return model.__name__


def render_asyncapi() -> str:
    return yaml.safe_dump(build_asyncapi(), sort_keys=False, allow_unicode=True, width=100)


def build_asyncapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    by_topic: dict[str, list[type[Event]]] = {}
    for model in EVENT_TYPES.values():
        by_topic.setdefault(model.TOPIC.name, []).append(model)

    for model in sorted(EVENT_TYPES.values(), key=lambda m: m.TYPE):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
        messages[_message_name(model)] = {
            "name": model.TYPE,
            "title": model.__name__,
            "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": model.TOPIC.key}}},
        }

    schemas["CloudEventsHeaders"] = {
        "type": "object",
        "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode",
        "required": ["ce_id", "ce_source", "ce_type", "ce_specversion"],
        "properties": {
            "ce_id": {
                "type": "string",
                "description": "Unique per event; consumers de-duplicate on it",
            },
            "ce_source": {"type": "string", "examples": ["/adgang/identity"]},
            "ce_type": {"type": "string", "examples": ["dk.adgang.identity.CredentialsIssued.v1"]},
            "ce_specversion": {"const": "1.0"},
            "ce_time": {"type": "string", "format": "date-time"},
            "ce_subject": {"type": "string"},
            "ce_correlationid": {
                "type": "string",
                "maxLength": 64,
                "description": "Extension attribute: the same on every event one HTTP request caused "
                "(its X-Correlation-ID), through every service; an event no request caused starts a "
                "chain with its own ce_id (docs/operations.md, following one application)",
            },
            "ce_causationid": {
                "type": "string",
                "description": "Extension attribute: the ce_id of the consumed event whose handler "
                "added this one; absent on events an HTTP request or a periodic job added",
            },
            "content-type": {"const": "application/json"},
        },
    }

    for topic in TOPICS:
        channel_id = topic.name.replace(".", "_")
        models = by_topic.get(topic.name, [])
        channels[channel_id] = {
            "address": topic.name,
            "description": f"{topic.description}. Key: {topic.key}. Dead letters: {topic.dlq}.",
            "messages": {
                _message_name(m): {"$ref": f"#/components/messages/{_message_name(m)}"} for m in models
            },
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "bindingVersion": "0.5.0",
                }
            },
        }
        if models:
            producer = topic.service
            operations[f"{producer}_publishes_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{producer} publishes through its transactional outbox (at least once)",
                "messages": [
                    {"$ref": f"#/channels/{channel_id}/messages/{_message_name(m)}"} for m in models
                ],
            }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Adgang events",
            "version": "1.0.0",
            "description": (
                "Every topic of the Adgang suite. Delivery is at least once: consumers de-duplicate "
                "on ce_id. Secrets (activation and one-time codes) are sealed with AES-256-GCM."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "Apache Kafka (KRaft)",
            },
            "development": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "Embedded broker",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
