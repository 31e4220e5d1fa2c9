"""The MeMo letter that carries credentials to the company's e-Boks (S2)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from services.notifier.memo import (
    MEMO_NAMESPACE,
    MemoFormatError,
    MemoMessage,
    build_memo_message,
    message_uuid_for,
    parse_memo_message,
)

NS = {"memo": MEMO_NAMESPACE}
OPERATOR_CVR = "11223344"
COMPANY_CVR = "87654321"
LETTER = "Brugernavn: acme-admin\nAktiveringskode: 7Q4K-93XZ\nÆblegrød & <tags>\n".encode()


def memo_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "message_uuid": uuid.UUID("6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71"),
        "label": "Dit login til Selvbetjening",
        "sender_cvr": OPERATOR_CVR,
        "sender_label": "Teleselskabet A/S",
        "recipient_cvr": COMPANY_CVR,
        "created_at": datetime(2024, 5, 14, 15, 30, 5, tzinfo=timezone(timedelta(hours=2))),
        "document_label": "Login til Selvbetjening",
        "filename": "login.txt",
        "language": "da",
        "content": LETTER,
    }
    kwargs.update(overrides)
    return kwargs


def only(tree: etree._Element, path: str) -> str:
    found = tree.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path} matched {len(found)} nodes"
    value = found[0]
    return value if isinstance(value, str) else (value.text or "")


def test_a_built_letter_parses_back_to_the_same_fields() -> None:
    xml = build_memo_message(**memo_kwargs(recipient_label="Acme ApS"))

    parsed = parse_memo_message(xml)

    assert parsed == MemoMessage(
        message_uuid=uuid.UUID("6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71"),
        label="Dit login til Selvbetjening",
        sender_cvr=OPERATOR_CVR,
        recipient_cvr=COMPANY_CVR,
        created_at=datetime(2024, 5, 14, 13, 30, 5, tzinfo=UTC),
        document_label="Login til Selvbetjening",
        filename="login.txt",
        language="da",
        encoding_format="text/plain",
        content=LETTER,
        sender_label="Teleselskabet A/S",
        recipient_label="Acme ApS",
    )
    assert parsed.created_at.utcoffset() == timedelta(0)


def test_the_letter_is_a_memo_1_2_digital_post_from_the_operator_to_the_company_cvr() -> None:
    xml = build_memo_message(**memo_kwargs())
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")

    root = etree.fromstring(xml)

    assert root.tag == f"{{{MEMO_NAMESPACE}}}Message"
    assert root.prefix == "memo"
    assert only(root, "/memo:Message/@memoVersion") == "1.2"
    header = "/memo:Message/memo:MessageHeader"
    assert only(root, f"{header}/memo:messageType") == "DIGITALPOST"
    assert only(root, f"{header}/memo:messageUUID") == "6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71"
    assert only(root, f"{header}/memo:mandatory") == "false"
    assert only(root, f"{header}/memo:legalNotification") == "false"
    assert only(root, f"{header}/memo:Sender/memo:senderID") == OPERATOR_CVR
    assert only(root, f"{header}/memo:Sender/memo:idType") == "CVR"
    assert only(root, f"{header}/memo:Sender/memo:label") == "Teleselskabet A/S"
    assert only(root, f"{header}/memo:Recipient/memo:recipientID") == COMPANY_CVR
    assert only(root, f"{header}/memo:Recipient/memo:idType") == "CVR"
    body = "/memo:Message/memo:MessageBody"
    assert only(root, f"{body}/memo:createdDateTime") == "2024-05-14T13:30:05Z"
    file = f"{body}/memo:MainDocument/memo:File"
    assert only(root, f"{file}/memo:encodingFormat") == "text/plain"
    assert only(root, f"{file}/memo:filename") == "login.txt"
    assert only(root, f"{file}/memo:language") == "da"
    assert base64.b64decode(only(root, f"{file}/memo:content")) == LETTER


def test_the_root_element_states_its_version_in_memo_version_alone() -> None:
    """MeMo 1.2 dropped `memoSchVersion` from `memo:Message` (with the XSD it named)."""
    root = etree.fromstring(build_memo_message(**memo_kwargs()))

    assert dict(root.attrib) == {"memoVersion": "1.2"}
    assert root.nsmap == {"memo": MEMO_NAMESPACE}


def test_every_element_is_in_the_memo_namespace() -> None:
    root = etree.fromstring(build_memo_message(**memo_kwargs(recipient_label="Acme ApS")))

    assert {etree.QName(element).namespace for element in root.iter()} == {MEMO_NAMESPACE}


def children(element: etree._Element | None) -> list[str]:
    assert element is not None
    return [etree.QName(child).localname for child in element]


def test_elements_come_in_the_order_memo_1_2_gives_them() -> None:
    """No XSD exists for MeMo 1.2: this is the structure we produce, in the sequence of MeMo
    1.2's published full example, with the elements it requires (docs/eboks.md)."""
    root = etree.fromstring(build_memo_message(**memo_kwargs(recipient_label="Acme ApS")))

    assert children(root) == ["MessageHeader", "MessageBody"]
    header = root.find("memo:MessageHeader", NS)
    assert children(header) == [
        "messageType",
        "messageUUID",
        "messageID",
        "label",
        "mandatory",
        "legalNotification",
        "Sender",
        "Recipient",
    ]
    assert children(root.find("memo:MessageHeader/memo:Sender", NS)) == ["senderID", "idType", "label"]
    assert children(root.find("memo:MessageHeader/memo:Recipient", NS)) == ["recipientID", "idType", "label"]
    assert children(root.find("memo:MessageBody", NS)) == ["createdDateTime", "MainDocument"]
    main_document = "memo:MessageBody/memo:MainDocument"
    assert children(root.find(main_document, NS)) == ["mainDocumentID", "label", "File"]
    assert children(root.find(f"{main_document}/memo:File", NS)) == [
        "encodingFormat",
        "filename",
        "language",
        "content",
    ]


def test_a_recipient_without_a_name_has_no_label() -> None:
    root = etree.fromstring(build_memo_message(**memo_kwargs()))

    assert children(root.find("memo:MessageHeader/memo:Recipient", NS)) == ["recipientID", "idType"]


def test_a_letter_spooled_with_the_old_schema_version_attribute_still_reads() -> None:
    xml = build_memo_message(**memo_kwargs()).replace(
        b'memoVersion="1.2"', b'memoVersion="1.2" memoSchVersion="1.2.0"'
    )

    assert parse_memo_message(xml).message_uuid == uuid.UUID("6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71")


def test_the_same_event_always_gives_the_same_letter_id() -> None:
    assert message_uuid_for("evt-42") == message_uuid_for("evt-42")
    assert message_uuid_for("evt-42").version == 5


def test_different_events_give_different_letter_ids() -> None:
    assert message_uuid_for("evt-42") != message_uuid_for("evt-43")


def test_an_empty_event_id_gives_no_letter_id() -> None:
    with pytest.raises(ValueError):
        message_uuid_for("")


def test_a_creation_time_without_time_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_memo_message(**memo_kwargs(created_at=datetime(2024, 5, 14, 15, 30)))


@pytest.mark.parametrize("field", ["sender_cvr", "recipient_cvr"])
@pytest.mark.parametrize("bad_cvr", ["1234567", "123456789", "1234567a", "../12345", "١٢٣٤٥٦٧٨"])
def test_a_cvr_that_is_not_eight_digits_is_rejected(field: str, bad_cvr: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_memo_message(**memo_kwargs(**{field: bad_cvr}))


def test_a_message_in_another_namespace_is_not_memo() -> None:
    xml = build_memo_message(**memo_kwargs()).replace(
        MEMO_NAMESPACE.encode(), b"https://example.org/not-memo"
    )

    with pytest.raises(MemoFormatError, match="root element"):
        parse_memo_message(xml)


def test_a_message_of_another_memo_version_is_rejected() -> None:
    xml = build_memo_message(**memo_kwargs()).replace(b'memoVersion="1.2"', b'memoVersion="1.1"')

    with pytest.raises(MemoFormatError, match="memoVersion"):
        parse_memo_message(xml)


def test_a_message_missing_its_recipient_is_rejected() -> None:
    root = etree.fromstring(build_memo_message(**memo_kwargs()))
    recipient = root.find("memo:MessageHeader/memo:Recipient", NS)
    assert recipient is not None
    recipient.getparent().remove(recipient)

    with pytest.raises(MemoFormatError, match="Recipient"):
        parse_memo_message(etree.tostring(root))


def test_broken_xml_is_a_format_error() -> None:
    with pytest.raises(MemoFormatError):
        parse_memo_message(b"<memo:Message xmlns:memo='https://DigitalPost.dk/MeMo-1'>")


def test_an_external_entity_is_refused_without_being_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    # Not well-formed on purpose: a parser that read the file would fail with a syntax
    # error instead of the DOCTYPE refusal, so this test notices resolution, not just leaks.
    secret.write_text("TOP-SECRET-KEY-MATERIAL <")
    xml = build_memo_message(**memo_kwargs(label="PLACEHOLDER"))
    declaration, rest = xml.split(b"\n", 1)
    hostile = (
        declaration
        + f'\n<!DOCTYPE memo:Message [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'.encode()
        + rest.replace(b"PLACEHOLDER", b"&xxe;")
    )

    with pytest.raises(MemoFormatError, match="DOCTYPE") as raised:
        parse_memo_message(hostile)

    assert "TOP-SECRET" not in str(raised.value)
