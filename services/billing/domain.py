"""Billing's rules that need no database: a Peppol endpoint checked by its scheme (S10)."""

from __future__ import annotations

import re

from shared.problems import InvalidField
from shared.validation import normalise_cvr, normalise_gln

PEPPOL_SCHEMES = {"0088": "GLN/EAN", "0184": "Danish CVR number", "0198": "Danish SE number"}


def peppol_endpoint(scheme: str, endpoint_id: str) -> str:
    """A Peppol endpoint id checked by its scheme's own rules (S10)."""
    value = endpoint_id.strip()
    try:
        if scheme == "0088":
            return normalise_gln(value)
        if scheme == "0184":
            return normalise_cvr(value.removeprefix("DK"))
        if scheme == "0198":  # an SE number: 8 digits, optionally after "DK"
            digits = value.removeprefix("DK")
            if re.fullmatch(r"[0-9]{8}", digits):  # ASCII digits, as the schema states
                return digits
            raise ValueError("a Danish SE number has exactly 8 digits")
    except ValueError as exc:
        raise InvalidField("endpoint_id", f"{exc} (scheme {scheme}: {PEPPOL_SCHEMES[scheme]})") from None
    raise InvalidField("scheme", f"must be one of {sorted(PEPPOL_SCHEMES)}")
