"""Every event's CloudEvents type, source, topic and key are derived from its topic family
(`shared/events/`): this table holds what each was when they were written out by hand, so a
derivation that goes wrong, or an event that is added or lost, fails here."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.asyncapi import build_asyncapi
from shared.events import EVENT_TYPES, TOPICS, AuditRecorded, Event

# class name, TYPE, TOPIC.name, SOURCE, the field whose value is the key
DECLARED: tuple[tuple[str, str, str, str, str], ...] = (
    ("CustomerRegistered", "dk.adgang.billing.CustomerRegistered.v1", "billing.customers", "/adgang/billing", "cvr"),
    ("SubscriptionOrdered", "dk.adgang.billing.SubscriptionOrdered.v1", "billing.orders", "/adgang/billing", "cvr"),
    ("SubscriptionUpgraded", "dk.adgang.billing.SubscriptionUpgraded.v1", "billing.orders", "/adgang/billing", "cvr"),
    ("OrderCompleted", "dk.adgang.billing.OrderCompleted.v1", "billing.orders", "/adgang/billing", "cvr"),
    ("InvoiceIssued", "dk.adgang.billing.InvoiceIssued.v1", "billing.invoices", "/adgang/billing", "cvr"),
    ("MasterDataChanged", "dk.adgang.billing.MasterDataChanged.v1", "billing.masterdata", "/adgang/billing", "cvr"),
    ("InvoiceFormatChanged", "dk.adgang.billing.InvoiceFormatChanged.v1", "billing.masterdata", "/adgang/billing", "cvr"),
    ("SubscriptionSettingsChanged", "dk.adgang.billing.SubscriptionSettingsChanged.v1", "billing.subscriptions", "/adgang/billing", "cvr"),
    ("ApplicationSubmitted", "dk.adgang.onboarding.ApplicationSubmitted.v1", "onboarding.applications", "/adgang/onboarding", "cvr"),
    ("ApplicationFailed", "dk.adgang.onboarding.ApplicationFailed.v1", "onboarding.applications", "/adgang/onboarding", "cvr"),
    ("UserCreated", "dk.adgang.identity.UserCreated.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserActivated", "dk.adgang.identity.UserActivated.v1", "identity.users", "/adgang/identity", "user_id"),
    ("CredentialChanged", "dk.adgang.identity.CredentialChanged.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserDisabled", "dk.adgang.identity.UserDisabled.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserEnabled", "dk.adgang.identity.UserEnabled.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserGrantsChanged", "dk.adgang.identity.UserGrantsChanged.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserDetailsChanged", "dk.adgang.identity.UserDetailsChanged.v1", "identity.users", "/adgang/identity", "user_id"),
    ("UserDeleted", "dk.adgang.identity.UserDeleted.v1", "identity.users", "/adgang/identity", "user_id"),
    ("SessionEnded", "dk.adgang.identity.SessionEnded.v1", "identity.users", "/adgang/identity", "user_id"),
    ("AdministratorProvisioningRejected", "dk.adgang.identity.AdministratorProvisioningRejected.v1", "identity.users", "/adgang/identity", "cvr"),
    ("TakeoverRequested", "dk.adgang.identity.TakeoverRequested.v1", "identity.users", "/adgang/identity", "cvr"),
    ("TakeoverCancelled", "dk.adgang.identity.TakeoverCancelled.v1", "identity.users", "/adgang/identity", "cvr"),
    ("TakeoverExpired", "dk.adgang.identity.TakeoverExpired.v1", "identity.users", "/adgang/identity", "cvr"),
    ("TakeoverCompleted", "dk.adgang.identity.TakeoverCompleted.v1", "identity.users", "/adgang/identity", "cvr"),
    ("CredentialsIssued", "dk.adgang.identity.CredentialsIssued.v1", "identity.credentials", "/adgang/identity", "recipient_cvr"),
    ("LoginCreated", "dk.adgang.identity.LoginCreated.v1", "identity.credentials", "/adgang/identity", "tenant_cvr"),
    ("TakeoverNoticeIssued", "dk.adgang.identity.TakeoverNoticeIssued.v1", "identity.credentials", "/adgang/identity", "cvr"),
    ("AuditRecorded", "dk.adgang.identity.AuditRecorded.v1", "identity.audit", "/adgang/identity", "tenant_cvr"),
    ("OtpRequested", "dk.adgang.identity.OtpRequested.v1", "identity.otp", "/adgang/identity", "user_id"),
    ("DeliverySucceeded", "dk.adgang.notifier.DeliverySucceeded.v1", "notifier.deliveries", "/adgang/notifier", "recipient"),
    ("DeliveryFailed", "dk.adgang.notifier.DeliveryFailed.v1", "notifier.deliveries", "/adgang/notifier", "recipient"),
    ("DeliverySlaBreached", "dk.adgang.notifier.DeliverySlaBreached.v1", "notifier.deliveries", "/adgang/notifier", "recipient"),
    ("BillingAuditRecorded", "dk.adgang.billing.AuditRecorded.v1", "billing.audit", "/adgang/billing", "cvr"),
)  # fmt: skip


def _distinct_values(model: type[Event]) -> dict[str, Any]:
    """A value for every field, each different from the others (UUIDs where a UUID is expected)."""
    return {
        name: uuid.uuid5(uuid.NAMESPACE_DNS, name) if "UUID" in str(field.annotation) else f"<{name}>"
        for name, field in model.model_fields.items()
    }


def test_the_registry_holds_exactly_the_declared_events() -> None:
    assert sorted(cls.__name__ for cls in EVENT_TYPES.values()) == sorted(row[0] for row in DECLARED)
    assert all(EVENT_TYPES[cls.TYPE] is cls for cls in EVENT_TYPES.values())
    assert {cls.TOPIC for cls in EVENT_TYPES.values()} <= set(TOPICS)


@pytest.mark.parametrize(("name", "type_", "topic", "source", "key_field"), DECLARED, ids=[r[0] for r in DECLARED])
def test_type_source_topic_and_key_are_derived_as_declared(
    name: str, type_: str, topic: str, source: str, key_field: str
) -> None:
    model = EVENT_TYPES[type_]
    assert model.__name__ == name
    assert type_ == model.TYPE
    assert model.TOPIC.name == topic
    assert model.TOPIC in TOPICS
    assert source == model.SOURCE
    values = _distinct_values(model)
    event = model.model_construct(**values)
    assert event.key() == str(values[key_field])
    assert event.subject() == event.key()


def test_an_audit_record_without_a_company_is_keyed_by_staff() -> None:
    values = _distinct_values(AuditRecorded) | {"tenant_cvr": None}
    assert AuditRecorded.model_construct(**values).key() == "staff"


def test_every_concrete_event_class_is_registered() -> None:
    def subclasses(cls: type[Event]) -> list[type[Event]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    concrete = {cls for cls in subclasses(Event) if "TYPE" in vars(cls)}
    assert concrete == set(EVENT_TYPES.values())


def test_the_topic_families_are_no_part_of_the_published_schemas() -> None:
    components = build_asyncapi()["components"]
    assert not [name for name in (*components["schemas"], *components["messages"]) if name.startswith("_")]
    assert not [cls for cls in EVENT_TYPES.values() if cls.__name__.startswith("_")]
