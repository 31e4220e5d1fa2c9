"""The CloudEvents envelope every event travels in, and the reasons a message is dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from shared.envelope import MAX_VALUE_BYTES, EnvelopeError, KafkaRecord, ReasonKind, decode, encode
from shared.events import (
    EVENT_TYPES,
    AccountRef,
    AdministratorProvisioningRejected,
    ApplicationFailed,
    ApplicationSubmitted,
    AuditRecorded,
    BillingAuditRecorded,
    Contact,
    CredentialChanged,
    CredentialsIssued,
    CustomerRegistered,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    Event,
    Grant,
    InvoiceFormatChanged,
    InvoiceIssued,
    LoginCreated,
    MasterDataChanged,
    OrderCompleted,
    OtpRequested,
    SessionEnded,
    SubscriptionOrdered,
    SubscriptionSettingsChanged,
    SubscriptionUpgraded,
    TakeoverCancelled,
    TakeoverCompleted,
    TakeoverExpired,
    TakeoverNoticeIssued,
    TakeoverNotified,
    TakeoverRequested,
    UserActivated,
    UserCreated,
    UserDeleted,
    UserDetailsChanged,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from shared.sealing import SealedSecret, Sealer, generate_key, parse_keyring

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CVR = "35657193"
USER_ID = uuid.UUID("6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71")
APPLICATION_ID = uuid.UUID("0b6e4c1e-1f4a-4c3e-9d0a-2f6a7c1b9e55")
EVENT_ID = "2f0d5b4e-9a51-4f7e-8f5a-6c3a1d2b7e90"


def customer_registered() -> CustomerRegistered:
    return CustomerRegistered(
        cvr=CVR,
        name="Eksempel ApS",
        parent_cvr="37826111",
        accounts=[AccountRef(account_number="12345678", name="Hovedkonto")],
        registered_at=AT,
    )


def application_submitted() -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=APPLICATION_ID,
        cvr=CVR,
        company_name="Eksempel ApS",
        contact=Contact(name="Anne Admin", email="anne@example.dk", mobile="+4520123456"),
        submitted_at=AT,
        deliver_by=AT + timedelta(hours=2),
    )


def user_created() -> UserCreated:
    return UserCreated(
        user_id=USER_ID,
        tenant_cvr=CVR,
        username=f"{CVR}-abcd",
        name="Anne Admin",
        email="anne@example.dk",
        mobile="+4520123456",
        role="administrator",
        grants=[Grant(cvr=CVR, accounts="all"), Grant(cvr="37826111", accounts=["12345678"])],
        functions=["invoices", "user_admin"],
        application_id=APPLICATION_ID,
        created_at=AT,
    )


def user_activated() -> UserActivated:
    return UserActivated(user_id=USER_ID, tenant_cvr=CVR, role="user", activated_at=AT)


def provisioning_rejected() -> AdministratorProvisioningRejected:
    return AdministratorProvisioningRejected(
        application_id=APPLICATION_ID, cvr=CVR, reason="admin-exists", rejected_at=AT
    )


def credentials_issued() -> CredentialsIssued:
    return CredentialsIssued(
        user_id=USER_ID,
        application_id=APPLICATION_ID,
        recipient_cvr=CVR,
        company_name="Eksempel ApS",
        username=f"{CVR}-abcd",
        activation_code=SealedSecret(kid="k1", nonce="bm9uY2U", ciphertext="Y2lwaGVydGV4dA"),
        expires_at=AT + timedelta(days=7),
        deliver_by=AT + timedelta(hours=2),
    )


_DELIVERY: dict[str, object] = {
    "delivery_id": uuid.UUID("9b2f3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"),
    "source_event_id": EVENT_ID,
    "source_event_type": CredentialsIssued.TYPE,
    "application_id": APPLICATION_ID,
    "channel": "eboks",
    "recipient": CVR,
    "message_id": "memo-1",
    "attempts": 1,
}


def delivery_succeeded() -> DeliverySucceeded:
    return DeliverySucceeded.model_validate(_DELIVERY | {"delivered_at": AT})


def delivery_failed() -> DeliveryFailed:
    return DeliveryFailed.model_validate(_DELIVERY | {"reason": "mailbox closed", "failed_at": AT})


def delivery_sla_breached() -> DeliverySlaBreached:
    return DeliverySlaBreached.model_validate(
        _DELIVERY | {"deliver_by": AT, "detected_at": AT + timedelta(minutes=1)}
    )


def application_failed() -> ApplicationFailed:
    return ApplicationFailed(application_id=APPLICATION_ID, cvr=CVR, reason="delivery-failed", failed_at=AT)


def user_deleted() -> UserDeleted:
    return UserDeleted(
        user_id=USER_ID, tenant_cvr=CVR, role="administrator", reason="deleted-by-support", deleted_at=AT
    )


def session_ended() -> SessionEnded:
    return SessionEnded(
        user_id=USER_ID,
        session_id=uuid.UUID("0b5d6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
        reason="refresh-token-reuse",
        ended_at=AT,
    )


def otp_requested() -> OtpRequested:
    challenge = uuid.UUID("6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f")
    sealer = Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")
    return OtpRequested(
        user_id=USER_ID,
        challenge_id=challenge,
        purpose="login",
        channel="sms",
        recipient="+4520123456",
        code=sealer.seal("123456", context=OtpRequested.sealing_context(challenge)),
        expires_at=AT + timedelta(minutes=5),
    )


def user_disabled() -> UserDisabled:
    return UserDisabled(user_id=USER_ID, tenant_cvr=CVR, disabled_at=AT)


def user_enabled() -> UserEnabled:
    return UserEnabled(user_id=USER_ID, tenant_cvr=CVR, enabled_at=AT)


def user_grants_changed() -> UserGrantsChanged:
    return UserGrantsChanged(
        user_id=USER_ID,
        tenant_cvr=CVR,
        grants=[Grant(cvr=CVR, accounts=["10000011"])],
        functions=["invoices"],
        changed_at=AT,
    )


def login_created() -> LoginCreated:
    sealer = Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")
    return LoginCreated(
        user_id=USER_ID,
        tenant_cvr=CVR,
        company_name="Nordlys Holding A/S",
        name="Jonas Berg",
        recipient_email="jonas@example.dk",
        username=f"{CVR}-abcd",
        activation_code=sealer.seal(
            "ABCD-EFGH-JKMN-PQRS-TVWX", context=LoginCreated.sealing_context(USER_ID)
        ),
        expires_at=AT + timedelta(days=7),
        created_by_name="Mette Holm",
    )


def audit_recorded() -> AuditRecorded:
    return AuditRecorded(
        audit_id=uuid.uuid4(), actor_id=USER_ID, actor_role="support", action="support.delete-user", at=AT
    )


def unknown_username_failed() -> AuditRecorded:
    return AuditRecorded(
        audit_id=uuid.uuid4(),
        action="login.failed",
        subject_username="35657193-nobody",
        details={"step": "password"},
        at=AT,
    )


def billing_audit_recorded() -> BillingAuditRecorded:
    return BillingAuditRecorded(
        audit_id=uuid.uuid4(),
        actor_id=USER_ID,
        action="invoice_format.changed",
        cvr="35657193",
        account_number="100200300",
        target="100200300",
        details={"before": {"format": "paper"}, "after": {"format": "pdf_email"}},
        client_address="192.0.2.7",
        at=AT,
    )


def credential_changed() -> CredentialChanged:
    return CredentialChanged(
        user_id=USER_ID, name="Mette", email="mette@example.dk", change="password_set", changed_at=AT
    )


SUBSCRIPTION_ID = uuid.UUID("3c9d7a0e-2b41-4f0e-8d6b-9e1f2a3b4c5d")
ORDER_ID = uuid.UUID("7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")


def subscription_ordered() -> SubscriptionOrdered:
    return SubscriptionOrdered(
        order_id=ORDER_ID,
        cvr=CVR,
        account_number="10000011",
        subscription_id=SUBSCRIPTION_ID,
        product_code="MOBIL-10",
        product_name="Mobil Erhverv 10 GB",
        monthly_fee_ore=9_900,
        options={"sim": "esim"},
        ordered_by=USER_ID,
        ordered_at=AT,
    )


def subscription_upgraded() -> SubscriptionUpgraded:
    return SubscriptionUpgraded(
        order_id=ORDER_ID,
        cvr=CVR,
        account_number="10000011",
        subscription_id=SUBSCRIPTION_ID,
        identifier="+4528123456",
        from_product_code="MOBIL-10",
        to_product_code="MOBIL-50",
        to_product_name="Mobil Erhverv 50 GB",
        monthly_fee_ore=14_900,
        ordered_by=USER_ID,
        upgraded_at=AT,
    )


def order_completed() -> OrderCompleted:
    return OrderCompleted(
        order_id=ORDER_ID,
        cvr=CVR,
        account_number="10000011",
        subscription_id=SUBSCRIPTION_ID,
        identifier="+4528123456",
        completed_at=AT,
    )


def invoice_issued() -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="202610-10000011",
        cvr=CVR,
        company_name="Nordlys Holding A/S",
        account_number="10000011",
        period_start=date(2026, 10, 1),
        period_end=date(2026, 10, 31),
        issued_on=date(2026, 11, 1),
        due_on=date(2026, 11, 15),
        amount_excl_vat_ore=10_000,
        vat_ore=2_500,
        amount_incl_vat_ore=12_500,
    )


def master_data_changed() -> MasterDataChanged:
    return MasterDataChanged(
        cvr=CVR,
        street="Havnegade 12",
        postal_code="1058",
        city="København K",
        contact_name="Mette Holm",
        contact_email="mette@example.dk",
        contact_phone="+4533124567",
        version=2,
        changed_by=USER_ID,
        changed_at=AT,
    )


def invoice_format_changed() -> InvoiceFormatChanged:
    return InvoiceFormatChanged(
        cvr=CVR,
        account_number="10000011",
        format="oioubl",
        gln="5790000435968",
        version=2,
        changed_by=USER_ID,
        changed_at=AT,
    )


def subscription_settings_changed() -> SubscriptionSettingsChanged:
    return SubscriptionSettingsChanged(
        subscription_id=SUBSCRIPTION_ID,
        cvr=CVR,
        account_number="10000011",
        identifier="+4528123456",
        product_kind="mobile",
        settings={"voicemail": {"enabled": True}},
        version=2,
        changed_by=USER_ID,
        changed_at=AT,
    )


def user_details_changed() -> UserDetailsChanged:
    return UserDetailsChanged(
        user_id=USER_ID,
        tenant_cvr=CVR,
        name="Mette",
        email="mette@example.dk",
        mobile="+4520123456",
        changed_at=AT,
    )


# Takeover of a company's administration (issue 10, item 3)
TAKEOVER_ID = uuid.UUID("3c8d2f6e-7a41-4b5e-8f0a-9d2c4e6b1a37")
NOTIFIED = TakeoverNotified(user_id=USER_ID, name="Mette Holm", email="mette@example.dk", language="en")
SEALED = SealedSecret(kid="k1", nonce="bm9uY2U", ciphertext="Y2lwaGVydGV4dA")


def takeover_requested() -> TakeoverRequested:
    return TakeoverRequested(
        takeover_id=TAKEOVER_ID,
        cvr=CVR,
        user_id=USER_ID,
        application_id=APPLICATION_ID,
        requested_at=AT,
        usable_from=AT + timedelta(hours=72),
        expires_at=AT + timedelta(days=10),
        notified=[NOTIFIED],
    )


def takeover_cancelled() -> TakeoverCancelled:
    return TakeoverCancelled(takeover_id=TAKEOVER_ID, cvr=CVR, user_id=USER_ID, by_user_id=USER_ID, cancelled_at=AT)


def takeover_expired() -> TakeoverExpired:
    return TakeoverExpired(takeover_id=TAKEOVER_ID, cvr=CVR, user_id=USER_ID, expired_at=AT)


def takeover_completed() -> TakeoverCompleted:
    return TakeoverCompleted(
        takeover_id=TAKEOVER_ID,
        cvr=CVR,
        company_name="Eksempel ApS",
        user_id=USER_ID,
        new_administrator_name="Ny Chef",
        disabled=[NOTIFIED],
        completed_at=AT,
    )


def takeover_notice_issued() -> TakeoverNoticeIssued:
    return TakeoverNoticeIssued(
        takeover_id=TAKEOVER_ID,
        notice_id=APPLICATION_ID,
        user_id=USER_ID,
        cvr=CVR,
        company_name="Eksempel ApS",
        name="Mette Holm",
        email="mette@example.dk",
        mobile="+4520123456",
        requested_at=AT,
        usable_from=AT + timedelta(hours=72),
        cancel_token=SEALED,
    )


BUILDERS: dict[type[Event], Callable[[], Event]] = {
    SubscriptionOrdered: subscription_ordered,
    SubscriptionUpgraded: subscription_upgraded,
    OrderCompleted: order_completed,
    InvoiceIssued: invoice_issued,
    MasterDataChanged: master_data_changed,
    InvoiceFormatChanged: invoice_format_changed,
    SubscriptionSettingsChanged: subscription_settings_changed,
    UserDetailsChanged: user_details_changed,
    CustomerRegistered: customer_registered,
    ApplicationSubmitted: application_submitted,
    ApplicationFailed: application_failed,
    UserCreated: user_created,
    UserActivated: user_activated,
    UserDeleted: user_deleted,
    SessionEnded: session_ended,
    AdministratorProvisioningRejected: provisioning_rejected,
    CredentialsIssued: credentials_issued,
    OtpRequested: otp_requested,
    LoginCreated: login_created,
    CredentialChanged: credential_changed,
    AuditRecorded: audit_recorded,
    UserDisabled: user_disabled,
    UserEnabled: user_enabled,
    UserGrantsChanged: user_grants_changed,
    DeliverySucceeded: delivery_succeeded,
    DeliveryFailed: delivery_failed,
    DeliverySlaBreached: delivery_sla_breached,
    BillingAuditRecorded: billing_audit_recorded,
    TakeoverRequested: takeover_requested,
    TakeoverCancelled: takeover_cancelled,
    TakeoverExpired: takeover_expired,
    TakeoverCompleted: takeover_completed,
    TakeoverNoticeIssued: takeover_notice_issued,
}


def headers_of(record: KafkaRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def with_headers(record: KafkaRecord, **changes: str | None) -> list[tuple[str, bytes]]:
    """The record's headers with some replaced (`None` removes one); `content_type` is `content-type`."""
    changes = {name.replace("content_type", "content-type"): v for name, v in changes.items()}
    headers = [(name, value) for name, value in record.headers if name not in changes]
    headers += [(name, value.encode()) for name, value in changes.items() if value is not None]
    return headers


def test_every_event_type_has_a_builder_here() -> None:
    assert {cls.TYPE for cls in BUILDERS} == set(EVENT_TYPES)


@pytest.mark.parametrize("event_class", list(BUILDERS), ids=lambda cls: cls.__name__)
def test_every_event_type_survives_an_encode_decode_round_trip(event_class: type[Event]) -> None:
    event = BUILDERS[event_class]()

    record = encode(event, event_id=EVENT_ID, time=AT)
    envelope = decode(topic=record.topic, headers=record.headers, value=record.value)

    assert record.topic == event_class.TOPIC.name
    assert envelope.event == event
    assert type(envelope.event) is event_class
    assert (envelope.id, envelope.type, envelope.source) == (EVENT_ID, event_class.TYPE, event_class.SOURCE)
    assert envelope.time == AT
    assert envelope.subject == event.subject()


def test_headers_are_cloudevents_binary_mode_and_the_value_is_the_bare_payload() -> None:
    record = encode(user_created(), event_id=EVENT_ID, time=AT)

    assert headers_of(record) == {
        "ce_id": EVENT_ID,
        "ce_source": "/adgang/identity",
        "ce_type": "dk.adgang.identity.UserCreated.v1",
        "ce_specversion": "1.0",
        "ce_time": "2026-01-05T09:00:00+00:00",
        "ce_subject": str(USER_ID),
        "content-type": "application/json",
    }
    payload = json.loads(record.value)
    assert "specversion" not in payload and "data" not in payload
    assert payload["user_id"] == str(USER_ID)


def test_credentials_are_keyed_by_the_companys_cvr_so_one_companys_events_stay_in_order() -> None:
    """S2: the letter goes to the company's e-Boks, addressed by CVR."""
    record = encode(credentials_issued(), event_id=EVENT_ID, time=AT)

    assert record.topic == "identity.credentials"
    assert record.key == CVR.encode()


def test_user_events_are_keyed_by_the_user_id() -> None:
    record = encode(user_created(), event_id=EVENT_ID, time=AT)

    assert record.topic == "identity.users"
    assert record.key == str(USER_ID).encode()


def test_the_sealed_activation_code_travels_as_its_sealed_parts_only() -> None:
    record = encode(credentials_issued(), event_id=EVENT_ID, time=AT)

    assert json.loads(record.value)["activation_code"] == {
        "kid": "k1",
        "alg": "A256GCM",
        "nonce": "bm9uY2U",
        "ciphertext": "Y2lwaGVydGV4dA",
    }


@pytest.mark.parametrize("missing", ["ce_id", "ce_source", "ce_type", "ce_specversion"])
def test_a_message_missing_a_required_cloudevents_header_is_refused_naming_it(missing: str) -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)

    with pytest.raises(EnvelopeError, match=f"missing CloudEvents header\\(s\\): {missing}$"):
        decode(topic=record.topic, headers=with_headers(record, **{missing: None}), value=record.value)


def test_a_message_without_any_headers_is_refused_naming_every_missing_header() -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)

    with pytest.raises(EnvelopeError, match="ce_id, ce_source, ce_type, ce_specversion"):
        decode(topic=record.topic, headers=None, value=record.value)


def test_an_event_on_a_topic_it_does_not_belong_to_is_refused() -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)

    with pytest.raises(
        ValueError, match="dk.adgang.billing.CustomerRegistered.v1 does not belong on topic identity.users"
    ):
        decode(topic="identity.users", headers=record.headers, value=record.value)


@pytest.mark.parametrize(
    ("header", "value", "refusal"),
    [
        pytest.param(
            "ce_type",
            "dk.adgang.billing.CustomerVanished.v1",
            "unknown ce_type 'dk.adgang.billing.CustomerVanished.v1'",
            id="an unknown event type, named",
        ),
        pytest.param("ce_specversion", "0.3", "unsupported ce_specversion '0.3'", id="another CloudEvents version"),
        pytest.param(
            "content_type",
            "application/avro",
            "unsupported content-type 'application/avro'",
            id="another content type",
        ),
        pytest.param("ce_time", "yesterday", "ce_time is not RFC 3339: 'yesterday'", id="a malformed event time"),
    ],
)
def test_a_header_value_the_envelope_does_not_take_is_refused_saying_why(
    header: str, value: str, refusal: str
) -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)

    with pytest.raises(EnvelopeError, match=refusal):
        decode(topic=record.topic, headers=with_headers(record, **{header: value}), value=record.value)


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        pytest.param(b"{'cvr': 35657193", "^not valid JSON", id="a value that is not JSON"),
        pytest.param(None, "message has no value", id="no value"),
    ],
)
def test_a_message_whose_value_is_not_a_json_payload_is_refused_saying_so(
    value: bytes | None, refusal: str
) -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)

    with pytest.raises(EnvelopeError, match=refusal):
        decode(topic=record.topic, headers=record.headers, value=value)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        pytest.param(
            lambda payload: payload | {"cvr": "3565719"},
            "^invalid payload: cvr: String should match pattern",
            id="a field failing validation, named",
        ),
        pytest.param(
            lambda payload: payload | {"accounts": [payload["accounts"][0] | {"account_number": "12"}]},
            "accounts.0.account_number",
            id="a nested problem, with the path to it",
        ),
        pytest.param(
            lambda payload: payload | {"password": "hunter2"},
            "password: Extra inputs are not permitted",
            id="an unexpected field",
        ),
    ],
)
def test_a_payload_the_event_does_not_validate_is_refused_naming_the_field(
    change: Callable[[dict], dict], refusal: str
) -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    payload = change(json.loads(record.value))

    with pytest.raises(EnvelopeError, match=refusal) as caught:
        decode(topic=record.topic, headers=record.headers, value=json.dumps(payload).encode())

    assert "not valid JSON" not in str(caught.value)


def test_a_json_content_type_with_a_charset_is_accepted() -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    headers = with_headers(record, content_type="application/json; charset=utf-8")

    assert decode(topic=record.topic, headers=headers, value=record.value).event == customer_registered()


def test_a_header_that_is_not_utf8_is_refused_naming_the_header() -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    headers = [(name, b"\xff\xfe" if name == "ce_source" else value) for name, value in record.headers]

    with pytest.raises(EnvelopeError, match="header 'ce_source' is not UTF-8"):
        decode(topic=record.topic, headers=headers, value=record.value)


def test_an_audit_entry_of_a_username_nobody_has_has_no_actor_and_survives_a_round_trip() -> None:
    event = unknown_username_failed()
    record = encode(event, event_id="e-1", time=AT)
    decoded = decode(topic=record.topic, headers=record.headers, value=record.value).event
    assert decoded == event and decoded.actor_id is None and decoded.key() == "staff"


def test_an_audit_event_of_the_first_version_without_the_new_fields_still_decodes() -> None:
    old = AuditRecorded.model_validate_json(
        json.dumps(
            {
                "audit_id": str(uuid.uuid4()),
                "actor_id": str(USER_ID),
                "actor_role": "administrator",
                "action": "user.create",
                "tenant_cvr": "35657193",
                "at": AT.isoformat(),
            }
        )
    )
    assert old.details == {} and old.subject_username is None


# --- the kind of each refusal (the dead-letter metric's label, docs/operations.md) -----------


def _refusal_cases() -> list[object]:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    ok = {"topic": record.topic, "headers": record.headers, "value": record.value, "key": record.key}
    payload = json.loads(record.value)
    return [
        pytest.param(ok | {"value": b"{not json"}, ReasonKind.INVALID_JSON, id="not JSON"),
        pytest.param(ok | {"value": b'{"cvr": "\xff"}'}, ReasonKind.INVALID_JSON, id="not UTF-8"),
        pytest.param(ok | {"value": b"[]"}, ReasonKind.INVALID_PAYLOAD, id="JSON, not an object"),
        pytest.param(
            ok | {"value": json.dumps(payload | {"cvr": "1"}).encode()}, ReasonKind.INVALID_PAYLOAD, id="bad field"
        ),
        pytest.param(ok | {"value": None}, ReasonKind.NO_VALUE, id="no value"),
        pytest.param(
            ok | {"value": b" " * MAX_VALUE_BYTES + record.value}, ReasonKind.OVERSIZED, id="valid but oversized"
        ),
        pytest.param(ok | {"headers": None}, ReasonKind.MISSING_HEADER, id="no headers"),
        pytest.param(
            ok | {"headers": with_headers(record, ce_type=None) + [("ce_type", None)]},
            ReasonKind.MISSING_HEADER,
            id="a header without a value",
        ),
        pytest.param(
            ok | {"headers": with_headers(record, ce_type="dk.adgang.billing.Unheard.v1")},
            ReasonKind.UNKNOWN_TYPE,
            id="unknown type",
        ),
        pytest.param(ok | {"topic": "identity.users"}, ReasonKind.WRONG_TOPIC, id="wrong topic"),
        pytest.param(ok | {"key": b"\xff\xfe"}, ReasonKind.BAD_KEY, id="key not UTF-8"),
        pytest.param(
            ok | {"headers": [*record.headers, ("ce_type", CredentialsIssued.TYPE.encode())]},
            ReasonKind.BAD_HEADER,
            id="a header twice, differently",
        ),
        pytest.param(
            ok | {"headers": [*record.headers, (b"\xff", b"x")]}, ReasonKind.BAD_HEADER, id="a name not UTF-8"
        ),
        pytest.param(ok | {"headers": [*record.headers, ("odd",)]}, ReasonKind.BAD_HEADER, id="not a pair"),
        pytest.param(
            ok | {"headers": with_headers(record, ce_id="x" * 65)}, ReasonKind.BAD_HEADER, id="ce_id too long"
        ),
        pytest.param(
            ok | {"headers": with_headers(record, ce_id="a\x00b")}, ReasonKind.BAD_HEADER, id="ce_id with NUL"
        ),
        pytest.param(
            ok | {"headers": with_headers(record, ce_specversion="0.3")}, ReasonKind.BAD_HEADER, id="version"
        ),
        pytest.param(
            ok | {"headers": with_headers(record, ce_time="yesterday")}, ReasonKind.BAD_HEADER, id="time"
        ),
    ]


@pytest.mark.parametrize(("message", "kind"), _refusal_cases())
def test_every_refusal_says_its_kind(message: dict, kind: ReasonKind) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(**message)

    assert caught.value.kind == kind


def test_the_size_limit_is_checked_before_the_value_is_parsed_and_a_value_at_the_limit_is_taken() -> None:
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    at_limit = record.value + b" " * (MAX_VALUE_BYTES - len(record.value))

    assert decode(topic=record.topic, headers=record.headers, value=at_limit).event == customer_registered()
    with pytest.raises(EnvelopeError, match=f"over the limit of {MAX_VALUE_BYTES} bytes"):
        decode(topic=record.topic, headers=record.headers, value=at_limit + b" ")


def test_headers_that_are_not_the_envelopes_may_hold_anything_and_a_repeated_equal_header_is_fine() -> None:
    """Tracing or tooling may add binary headers; they are not ours to refuse."""
    record = encode(customer_registered(), event_id=EVENT_ID, time=AT)
    headers = [*record.headers, ("trace-bin", b"\xff\x00"), ("empty", None), ("ce_id", EVENT_ID.encode())]

    envelope = decode(topic=record.topic, headers=headers, value=record.value, key=record.key)

    assert envelope.id == EVENT_ID and envelope.event == customer_registered()
