"""Digits in a documented pattern are 0-9: JSON Schema reads `\\d` as ECMA-262 does (ASCII
digits), Python and pydantic's regex engine as any Unicode digit, so the patterns say [0-9] and
the checks behind them take only those (S10 for the Peppol endpoint)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from services.billing.domain import peppol_endpoint
from services.billing.schemas import AccountNumber, CompanyCvr
from shared.events.base import Cvr
from shared.problems import InvalidField

ARABIC_INDIC = "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668"  # 12345678
SUPERSCRIPT = "\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078"  # isdigit(), yet not 0-9


@pytest.mark.parametrize("kind", [Cvr, CompanyCvr, AccountNumber], ids=["event cvr", "path cvr", "account"])
def test_a_number_in_other_digits_is_refused(kind: object) -> None:
    adapter = TypeAdapter(kind)
    assert adapter.validate_python("12345678") == "12345678"
    with pytest.raises(ValidationError):
        adapter.validate_python(ARABIC_INDIC)


@pytest.mark.parametrize("digits", [ARABIC_INDIC, SUPERSCRIPT])
def test_a_danish_se_number_is_eight_ascii_digits(digits: str) -> None:
    assert peppol_endpoint("0198", "DK12345678") == "12345678"
    with pytest.raises(InvalidField, match="exactly 8 digits"):
        peppol_endpoint("0198", f"DK{digits}")
