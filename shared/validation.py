"""Validation of Danish identifiers and contact details, shared by every API.

Each function returns the normalised value or raises `ValueError` with a message written for
the person who typed the value (it ends up in the problem+json `errors`).

The field types at the end also say in the APIs' OpenAPI documents what they accept (`pattern`,
`format`, `maxLength`), so that a client generated from the contract sends what the API takes:
every value the schema allows is accepted. The validators accept more than the schema states
(a CVR with spaces, a mobile number without +45) and answer in the canonical form the schema
names. What a pattern cannot say is a custom `format`: `cvr` and `gln` carry a check digit
(modulus 11, GS1); `tests/integration/test_api_fuzz.py` generates them for schemathesis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
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


@dataclass(frozen=True)
class Documented:
    """What a validator accepts, added to the field's JSON schema. A `maxLength` keeps the
    smaller of the field's own and this one."""

    pattern: str | None = None
    format: str | None = None
    max_length: int | None = None

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if self.pattern is not None:
            json_schema["pattern"] = self.pattern
        if self.format is not None:
            json_schema["format"] = self.format
        if self.max_length is not None:
            json_schema["maxLength"] = min(json_schema.get("maxLength", self.max_length), self.max_length)
        return json_schema


def _e164_pattern(*kinds: str) -> str:
    """Danish numbers of these kinds in E.164, from the numbering plan `phonenumbers` holds (the
    validators' own source), so the pattern and the validator cannot drift apart."""
    plan = phonenumbers.PhoneMetadata.metadata_for_region("DK")
    assert plan is not None
    national = "|".join(getattr(plan, kind).national_number_pattern for kind in kinds)
    return rf"^\+45(?:{national})$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# `normalise_email` refuses addresses at the special-use domains (`x@y.test`), and more than
# 254 characters (RFC 5321); the local part is a dot-atom (no quoted local parts).
_SPECIAL_USE = "|".join(_any_case(name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
EMAIL_PATTERN = rf'^(?![^@]*@(?:.*\.)?(?:{_SPECIAL_USE})$)[^\s@"]+@[^\s@]+$'
CVR_PATTERN = r"^[1-9][0-9]{7}$"
DANISH_MOBILE_PATTERN = _e164_pattern("mobile")
DANISH_PHONE_PATTERN = _e164_pattern("fixed_line", "mobile", "toll_free", "premium_rate")
GLN_PATTERN = r"^[0-9]{13}$"

# The same rules as pydantic field types, so every API validates a field the same way.
CvrNumber = Annotated[
    str,
    AfterValidator(normalise_cvr),
    Documented(pattern=CVR_PATTERN, format="cvr"),
]
DanishMobile = Annotated[
    str, AfterValidator(normalise_danish_mobile), Documented(pattern=DANISH_MOBILE_PATTERN)
]
EmailAddress = Annotated[
    str, AfterValidator(normalise_email), Documented(pattern=EMAIL_PATTERN, format="email", max_length=254)
]
DanishPhone = Annotated[str, AfterValidator(normalise_danish_phone), Documented(pattern=DANISH_PHONE_PATTERN)]
Gln = Annotated[str, AfterValidator(normalise_gln), Documented(pattern=GLN_PATTERN, format="gln")]
