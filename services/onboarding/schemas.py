from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.validation import CvrNumber, DanishMobile, EmailAddress

# Some character that is not white space (as `str.split` sees it), said so that ECMAScript and
# Python read it alike: a name of spaces alone is refused.
NOT_ONLY_SPACE = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=200,
        description="The administrator-to-be",
        json_schema_extra={"pattern": NOT_ONLY_SPACE},
    )
    email: EmailAddress = Field(max_length=320)
    mobile: DanishMobile = Field(max_length=32, description="Danish mobile number; login codes go here (S7)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("a name is required")
        return value


class ApplicationIn(BaseModel):
    """The online application form (S1)."""

    model_config = ConfigDict(extra="forbid")

    cvr: CvrNumber = Field(max_length=16, examples=["35657193"])
    company_name: str = Field(min_length=1, max_length=200)
    contact: ContactIn
    language: Literal["da", "en"] = "da"
    takeover: bool = Field(
        default=False,
        description="Take over the administration of a company whose administrator has activated: a "
        "letter to the company's e-Boks carries a code that works after a notice period, and the "
        "company's administrators are told and may cancel it. Ask after a 409 `admin-exists` with "
        "`takeover_available`",
    )


class ApplicationAccepted(BaseModel):
    id: str
    status: str
    deliver_by: datetime
    kind: Literal["application", "takeover"] = Field(
        default="application",
        description="`takeover`: the company has an activated administrator; the letter's code works "
        "after a notice period, and the administrators are told and may cancel it",
    )


class ApplicationOut(BaseModel):
    id: str
    cvr: str
    kind: Literal["application", "takeover"] = "application"
    status: Literal["received", "provisioning", "credentials_sent", "failed", "rejected"]
    status_detail: str | None = None
    submitted_at: datetime
    deliver_by: datetime
    delivered_at: datetime | None = None


class SupportApplicationOut(BaseModel):
    """An application as support sees it (S3, S13): what it says and how far it came."""

    id: str
    cvr: str
    company_name: str
    contact_name: str = Field(description="Who applied, as the form said; not the login's holder")
    language: str
    status: Literal["received", "provisioning", "credentials_sent", "failed", "rejected"]
    status_detail: str | None = None
    submitted_at: datetime
    deliver_by: datetime
    delivered_at: datetime | None = None
    sla_breached_at: datetime | None = Field(
        default=None, description="When the letter was found not delivered by `deliver_by` (S2)"
    )
    admin_removed_at: datetime | None = Field(
        default=None, description="When the login from this application was withdrawn or deleted"
    )
