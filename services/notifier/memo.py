"""The MeMo message that carries a letter into the company's e-Boks (S2).

MeMo ("Meddelelsesmodel") is the Danish digital-post message model. We build the small
subset a plain letter needs: one ``MessageHeader`` naming sender and recipient by CVR, and
one ``MessageBody`` with a single main document whose bytes travel base64-encoded.

Version 1.2: the root element states its version in ``memoVersion`` alone. MeMo 1.2 dropped the
``memoSchVersion`` attribute along with the published XSD and Schematron, which the Agency for
Digital Government does not update beyond 1.1 (its rules are checked by its own library and test
environment instead). So nothing here validates against a schema: the elements come in the order
MeMo 1.2's published examples give them, and tests/unit/test_memo.py checks that order, the
namespace and the required elements of what we build (docs/eboks.md).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

MEMO_NAMESPACE = "https://DigitalPost.dk/MeMo-1"
MEMO_PREFIX = "memo"
MEMO_VERSION = "1.2"
MESSAGE_TYPE = "DIGITALPOST"
CVR_ID_TYPE = "CVR"

# Fixed forever: changing it would give a redelivered event a new letter id, and the
# company would receive the same credentials letter twice.
LETTER_UUID_NAMESPACE = uuid.UUID("2d10f4d7-e7e1-443a-9b9f-27edf48eaf56")

_NS = {MEMO_PREFIX: MEMO_NAMESPACE}
# ASCII digits only: str.isdigit() would also accept e.g. Arabic-Indic digits.
_CVR_PATTERN = re.compile(r"[0-9]{8}")
_LANGUAGE_PATTERN = re.compile(r"[a-z]{2}")
_MIME_TYPE_PATTERN = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", re.IGNORECASE)


class MemoFormatError(ValueError):
    """The bytes are not a MeMo 1.2 digital-post message this service can read."""


@dataclass(frozen=True)
class MemoMessage:
    """The fields of a parsed MeMo letter; ``created_at`` is in UTC, to the second."""

    message_uuid: uuid.UUID
    label: str
    sender_cvr: str
    recipient_cvr: str
    created_at: datetime
    document_label: str
    filename: str
    language: str
    encoding_format: str
    content: bytes
    sender_label: str | None = None
    recipient_label: str | None = None


def ensure_cvr(value: str, *, field: str = "cvr") -> str:
    """Return ``value`` if it is a CVR number (exactly 8 ASCII digits), else raise ValueError.

    Callers rely on this to put a CVR into a file path safely.
    """
    if not isinstance(value, str) or not _CVR_PATTERN.fullmatch(value):
        raise ValueError(f"{field} must be exactly 8 digits, got {value!r}")
    return value


def message_uuid_for(event_id: str) -> uuid.UUID:
    """The letter id for the event that asked for the letter: same event, same id.

    A redelivered event therefore produces a letter the transports recognise as already
    delivered, instead of a second letter.
    """
    if not event_id:
        raise ValueError("event_id must not be empty")
    return uuid.uuid5(LETTER_UUID_NAMESPACE, event_id)


def build_memo_message(
    *,
    message_uuid: uuid.UUID,
    label: str,
    sender_cvr: str,
    sender_label: str,
    recipient_cvr: str,
    created_at: datetime,
    document_label: str,
    filename: str,
    language: str,
    content: bytes,
    encoding_format: str = "text/plain",
    recipient_label: str | None = None,
) -> bytes:
    """Serialise one digital-post letter as MeMo 1.2 XML (UTF-8, with XML declaration)."""
    ensure_cvr(sender_cvr, field="sender_cvr")
    ensure_cvr(recipient_cvr, field="recipient_cvr")
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    for name, text in (
        ("label", label),
        ("sender_label", sender_label),
        ("document_label", document_label),
        ("filename", filename),
    ):
        if not text.strip():
            raise ValueError(f"{name} must not be empty")
    if not _LANGUAGE_PATTERN.fullmatch(language):
        raise ValueError(f"language must be a two-letter ISO 639-1 code, got {language!r}")
    if not _MIME_TYPE_PATTERN.fullmatch(encoding_format):
        raise ValueError(f"encoding_format must be a MIME type, got {encoding_format!r}")

    message_id = str(message_uuid)
    root = etree.Element(_tag("Message"), nsmap=_NS, memoVersion=MEMO_VERSION)

    # Element order: the sequence of MeMo 1.2's published examples (no XSD exists for 1.2; what
    # the receiver checks is its own). tests/unit/test_memo.py holds us to it.
    header = _child(root, "MessageHeader")
    _child(header, "messageType", MESSAGE_TYPE)
    _child(header, "messageUUID", message_id)
    _child(header, "messageID", message_id)
    _child(header, "label", label)
    _child(header, "mandatory", "false")
    _child(header, "legalNotification", "false")
    sender = _child(header, "Sender")
    _child(sender, "senderID", sender_cvr)
    _child(sender, "idType", CVR_ID_TYPE)
    _child(sender, "label", sender_label)
    recipient = _child(header, "Recipient")
    _child(recipient, "recipientID", recipient_cvr)
    _child(recipient, "idType", CVR_ID_TYPE)
    if recipient_label:
        _child(recipient, "label", recipient_label)

    body = _child(root, "MessageBody")
    _child(body, "createdDateTime", _format_utc(created_at))
    main_document = _child(body, "MainDocument")
    _child(main_document, "mainDocumentID", message_id)
    _child(main_document, "label", document_label)
    file = _child(main_document, "File")
    _child(file, "encodingFormat", encoding_format)
    _child(file, "filename", filename)
    _child(file, "language", language)
    _child(file, "content", base64.b64encode(content).decode("ascii"))

    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def parse_memo_message(xml: bytes) -> MemoMessage:
    """Read a MeMo 1.2 digital-post letter; raise MemoFormatError if it is not one.

    It checks what it reads (namespace, version, message type, CVR parties, the elements it
    takes, once each), not the whole message model. A ``memoSchVersion`` attribute, which letters
    spooled before MeMo 1.2 was followed carry, is ignored.

    The parser never touches the network, never resolves entities and refuses any DOCTYPE:
    MeMo has no DTD, so a DOCTYPE can only be an attempt at XXE or entity expansion.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise MemoFormatError(f"not well-formed XML: {exc}") from exc

    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise MemoFormatError("a MeMo message must not contain a DOCTYPE")
    if root.tag != _tag("Message"):
        raise MemoFormatError(f"root element must be {_tag('Message')}, got {root.tag}")
    version = root.get("memoVersion")
    if version != MEMO_VERSION:
        raise MemoFormatError(f"memoVersion must be {MEMO_VERSION}, got {version!r}")

    message_type = _text(root, "memo:MessageHeader/memo:messageType")
    if message_type != MESSAGE_TYPE:
        raise MemoFormatError(f"messageType must be {MESSAGE_TYPE}, got {message_type!r}")
    for party in ("Sender", "Recipient"):
        id_type = _text(root, f"memo:MessageHeader/memo:{party}/memo:idType")
        if id_type != CVR_ID_TYPE:
            raise MemoFormatError(f"{party} idType must be {CVR_ID_TYPE}, got {id_type!r}")

    message_uuid_text = _text(root, "memo:MessageHeader/memo:messageUUID")
    try:
        message_uuid = uuid.UUID(message_uuid_text)
    except ValueError as exc:
        raise MemoFormatError(f"messageUUID is not a UUID: {message_uuid_text!r}") from exc

    created_text = _text(root, "memo:MessageBody/memo:createdDateTime")
    try:
        created_at = datetime.fromisoformat(created_text)
    except ValueError as exc:
        raise MemoFormatError(f"createdDateTime is not ISO 8601: {created_text!r}") from exc
    if created_at.tzinfo is None:
        raise MemoFormatError(f"createdDateTime has no time zone: {created_text!r}")

    file_path = "memo:MessageBody/memo:MainDocument/memo:File"
    content_text = _text(root, f"{file_path}/memo:content", allow_empty=True)
    try:
        content = base64.b64decode("".join(content_text.split()), validate=True)
    except binascii.Error as exc:
        raise MemoFormatError("File content is not valid base64") from exc

    try:
        sender_cvr = ensure_cvr(_text(root, "memo:MessageHeader/memo:Sender/memo:senderID"))
        recipient_cvr = ensure_cvr(_text(root, "memo:MessageHeader/memo:Recipient/memo:recipientID"))
    except ValueError as exc:
        raise MemoFormatError(str(exc)) from exc

    return MemoMessage(
        message_uuid=message_uuid,
        label=_text(root, "memo:MessageHeader/memo:label"),
        sender_cvr=sender_cvr,
        recipient_cvr=recipient_cvr,
        created_at=created_at.astimezone(UTC),
        document_label=_text(root, "memo:MessageBody/memo:MainDocument/memo:label"),
        filename=_text(root, f"{file_path}/memo:filename"),
        language=_text(root, f"{file_path}/memo:language"),
        encoding_format=_text(root, f"{file_path}/memo:encodingFormat"),
        content=content,
        sender_label=_text(root, "memo:MessageHeader/memo:Sender/memo:label"),
        recipient_label=_optional_text(root, "memo:MessageHeader/memo:Recipient/memo:label"),
    )


def _tag(local_name: str) -> str:
    return f"{{{MEMO_NAMESPACE}}}{local_name}"


def _child(parent: etree._Element, local_name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, _tag(local_name))
    if text is not None:
        element.text = text
    return element


def _format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _optional_text(root: etree._Element, path: str) -> str | None:
    found = root.xpath(path, namespaces=_NS)
    if not found:
        return None
    return (found[0].text or "").strip() or None


def _text(root: etree._Element, path: str, *, allow_empty: bool = False) -> str:
    found = root.xpath(path, namespaces=_NS)
    if len(found) != 1:
        raise MemoFormatError(f"expected exactly one {path}, found {len(found)}")
    text = (found[0].text or "").strip()
    if not text and not allow_empty:
        raise MemoFormatError(f"{path} is empty")
    return text
