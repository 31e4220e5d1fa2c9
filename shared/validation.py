"""Validation of Danish identifiers and contact details, shared by every API.

Each function returns the normalised value or raises `ValueError` with a message written for
the person who typed the value (it ends up in the problem+json `errors`).
"""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator
from stdnum import ean as stdnum_ean
from stdnum.dk import cvr as stdnum_cvr
from stdnum.exceptions import InvalidChecksum, InvalidFormat, InvalidLength, ValidationError


def normalise_cvr(value: str) -> str:
    compact = stdnum_cvr.compact(value)
    try:
        return str(stdnum_cvr.validate(compact))
    except InvalidLength as exc:
        raise ValueError("a CVR number has exactly 8 digits") from exc
    except InvalidFormat as exc:
        raise ValueError("a CVR number has only digits and does not start with 0") from exc
    except InvalidChecksum as exc:
        raise ValueError(
            "this is not a valid CVR number: the check digit (modulus 11) does not match"
        ) from exc
    except ValidationError as exc:
        raise ValueError(f"this is not a valid CVR number: {exc}") from exc


def normalise_danish_mobile(value: str) -> str:
    """A Danish mobile number in E.164 (`+4512345678`); login codes are sent to it (S7)."""
    try:
        number = phonenumbers.parse(value, "DK")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("this is not a phone number") from exc
    if phonenumbers.region_code_for_number(number) != "DK" or number.country_code != 45:
        raise ValueError("must be a Danish mobile number (+45 followed by 8 digits)")
    if not phonenumbers.is_valid_number(number):
        raise ValueError("this is not a valid Danish phone number")
    kind = phonenumbers.number_type(number)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ValueError("must be a mobile number that can receive SMS")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_danish_phone(value: str) -> str:
    """Any Danish phone number (mobile, landline or service number) in E.164: call forwarding
    targets and members of a Personligt Nummer (S11)."""
    try:
        number = phonenumbers.parse(value, "DK")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("this is not a phone number") from exc
    if number.country_code != 45:
        raise ValueError("must be a Danish phone number (+45 followed by 8 digits)")
    if not phonenumbers.is_valid_number(number):
        raise ValueError("this is not a valid Danish phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_gln(value: str) -> str:
    """A GLN (EAN location number) for OIOUBL invoices: 13 digits, the last a check digit (S10)."""
    compact = stdnum_ean.compact(value)
    if not compact.isdigit() or len(compact) != 13:
        raise ValueError("a GLN/EAN number has exactly 13 digits")
    try:
        return str(stdnum_ean.validate(compact))
    except InvalidChecksum as exc:
        raise ValueError("this is not a valid GLN/EAN number: the check digit does not match") from exc
    except ValidationError as exc:
        raise ValueError(f"this is not a valid GLN/EAN number: {exc}") from exc


def normalise_email(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"this is not a valid email address: {exc}") from exc
    return result.normalized


# The same rules as pydantic field types, so every API validates a field the same way.
CvrNumber = Annotated[str, AfterValidator(normalise_cvr)]
DanishMobile = Annotated[str, AfterValidator(normalise_danish_mobile)]
EmailAddress = Annotated[str, AfterValidator(normalise_email)]
DanishPhone = Annotated[str, AfterValidator(normalise_danish_phone)]
Gln = Annotated[str, AfterValidator(normalise_gln)]
