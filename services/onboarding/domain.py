"""Onboarding's rules: an application's life and who may apply (S1–S3). No I/O here."""

from __future__ import annotations

from enum import StrEnum


class ApplicationStatus(StrEnum):
    received = "received"
    provisioning = "provisioning"
    credentials_sent = "credentials_sent"
    failed = "failed"
    rejected = "rejected"


IN_FLIGHT = (ApplicationStatus.received, ApplicationStatus.provisioning)
_RANK = {
    ApplicationStatus.received: 0,
    ApplicationStatus.provisioning: 1,
    ApplicationStatus.failed: 2,
    ApplicationStatus.rejected: 2,
    ApplicationStatus.credentials_sent: 3,
}


def may_move(current: ApplicationStatus, new: ApplicationStatus) -> bool:
    """Statuses only move forward: events from different topics may arrive in any order.

    A letter that is delivered after all (after the application was failed for missing its
    deadline) still shows as sent: the company has its credentials."""
    if current in (ApplicationStatus.credentials_sent, ApplicationStatus.rejected):
        return False
    return _RANK[new] > _RANK[current]


class AdministratorStatus(StrEnum):
    pending = "pending"  # letter issued, not yet activated
    active = "active"
