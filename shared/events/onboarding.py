"""Onboarding's events: applications for self-service access."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events.base import Cvr, Event, Language, Topic

ONBOARDING_APPLICATIONS = Topic("onboarding.applications", 3, "cvr", "Applications for self-service access")


# --- onboarding.applications ----------------------------------------------------------------


class _OnboardingApplications(Event):
    TOPIC = ONBOARDING_APPLICATIONS
    KEY_FIELD = "cvr"


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    email: str
    mobile: str = Field(description="E.164")


class ApplicationSubmitted(_OnboardingApplications):
    """A company applied for self-service access (S1); its letter is due by `deliver_by` (S2)."""

    application_id: UUID
    cvr: Cvr
    company_name: str
    contact: Contact
    language: Language = "da"
    submitted_at: datetime
    deliver_by: datetime
    takeover: bool = Field(
        default=False,
        description="The applicant asks for a takeover should the company have an activated "
        "administrator (identity decides with its own data): the letter's code then works after a "
        "notice period, and the administrators are told",
    )


class ApplicationFailed(_OnboardingApplications):
    """No usable letter came of the application (undeliverable, or the deadline passed without
    one): the login issued for it, if any, is withdrawn so that the company can apply again."""

    application_id: UUID
    cvr: Cvr
    reason: Literal["delivery-failed", "deadline-missed"]
    failed_at: datetime
