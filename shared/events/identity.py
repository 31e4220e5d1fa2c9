"""Identity's events: users, credentials and one-time codes to deliver, and its audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events.base import Cvr, Event, Function, Language, Topic
from shared.sealing import SealedSecret

IDENTITY_USERS = Topic(
    "identity.users", 3, "user id (cvr for tenant-level events)", "Users and their lifecycle"
)
IDENTITY_CREDENTIALS = Topic("identity.credentials", 3, "cvr", "Credentials to deliver (sealed)")
IDENTITY_OTP = Topic("identity.otp", 3, "user id", "One-time codes to deliver (sealed)")
IDENTITY_AUDIT = Topic(
    "identity.audit", 3, "tenant cvr", "Audit trail: logins, second factors, admin and support actions"
)


# --- identity.users -------------------------------------------------------------------------


class _IdentityUsers(Event):
    TOPIC = IDENTITY_USERS
    KEY_FIELD = "user_id"


class Grant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cvr: Cvr
    accounts: Literal["all"] | list[str]


class UserCreated(_IdentityUsers):
    user_id: UUID
    tenant_cvr: Cvr
    username: str
    name: str
    email: str
    mobile: str
    role: Literal["administrator", "user"]
    grants: list[Grant]
    functions: list[Function]
    application_id: UUID | None = None
    created_at: datetime
    language: Language = Field(
        default="da", description="The language of every message to the user (da when not said)"
    )
    activation_expires_at: datetime | None = Field(
        default=None,
        description="A company's first administrator: when its letter's code expires; past it, the "
        "login no longer blocks a new application",
    )


class UserActivated(_IdentityUsers):
    user_id: UUID
    tenant_cvr: Cvr
    role: Literal["administrator", "user"]
    activated_at: datetime


class CredentialChanged(_IdentityUsers):
    """A password or second factor was set or changed: tell the user through another channel
    (email), so a change they did not make does not go unnoticed. A changed email or mobile
    number (`contact_details_changed`) is told at the email the login had; a changed mobile
    number also by SMS to the number it had (`old_mobile`)."""

    user_id: UUID
    name: str
    email: str
    change: Literal[
        "password_set",
        "authenticator_added",
        "second_factor_reset",
        "contact_details_changed",
        "password_reset",
        "password_changed",
    ]
    language: Language = "da"
    changed_at: datetime
    old_mobile: str | None = Field(
        default=None,
        description="`contact_details_changed` of the mobile number: the number the login had, "
        "which is told by SMS (absent when the mobile number did not change)",
    )
    new_mobile: str | None = Field(
        default=None,
        description="With `old_mobile`: the number the login has now, shown masked in that SMS",
    )


class UserDisabled(_IdentityUsers):
    """The login is disabled: its sessions are ended; refuse its tokens at once."""

    user_id: UUID
    tenant_cvr: Cvr
    by_user_id: UUID | None = None
    disabled_at: datetime


class UserEnabled(_IdentityUsers):
    user_id: UUID
    tenant_cvr: Cvr
    by_user_id: UUID | None = None
    enabled_at: datetime


class UserGrantsChanged(_IdentityUsers):
    """What the user may see and do changed; sessions were ended, so tokens carry the new grants."""

    user_id: UUID
    tenant_cvr: Cvr
    grants: list[Grant]
    functions: list[Function]
    by_user_id: UUID | None = None
    changed_at: datetime


class UserDetailsChanged(_IdentityUsers):
    """A user's name, email, mobile or language changed (where and how to reach them, not what
    they may do)."""

    user_id: UUID
    tenant_cvr: Cvr
    name: str
    email: str
    mobile: str
    by_user_id: UUID | None = None
    changed_at: datetime
    language: Language = Field(
        default="da", description="The language of every message to the user (da when not said)"
    )


class UserDeleted(_IdentityUsers):
    """A login is gone for good; its sessions end and its CVR may get a new administrator (S3)."""

    user_id: UUID
    tenant_cvr: Cvr
    role: Literal["administrator", "user"]
    # `replaced-by-new-application`: a pending administrator login, never activated, withdrawn
    # because the company applied again (a stranger's application must not block it).
    reason: Literal[
        "credentials-undeliverable",
        "deleted-by-support",
        "deleted-by-administrator",
        "replaced-by-new-application",
        "takeover-cancelled",
        "takeover-expired",
    ]
    application_id: UUID | None = None
    deleted_at: datetime


# `password-changed`: the user changed their password, which ends their other sessions;
# `ended-by-user`: the user ended the session from their list of sessions.
SessionEndReason = Literal[
    "logout",
    "refresh-token-reuse",
    "reauthentication-failed",
    "second-factor-reset",
    "password-reset",
    "password-changed",
    "ended-by-user",
]


class SessionEnded(_IdentityUsers):
    """One login session ended before its time: the user logged out, or a refresh token of
    it was presented a second time (it may have been copied). Refuse its access tokens at once
    (S12); the user's other sessions go on. Disabling, re-granting or deleting a user ends all
    their sessions and is told by the user's own event (`UserDisabled`, `UserGrantsChanged`,
    `UserDeleted`), not by this one."""

    user_id: UUID
    session_id: UUID = Field(description="The `sid` claim of the session's access tokens")
    reason: SessionEndReason
    ended_at: datetime


class AdministratorProvisioningRejected(_IdentityUsers):
    """Identity would not create an administrator for an application (e.g. one exists)."""

    KEY_FIELD = "cvr"

    application_id: UUID
    cvr: Cvr
    # `takeover-pending`: a takeover was asked for while another one of the company is open.
    reason: Literal["admin-exists", "takeover-pending"]
    group_cvr: Cvr | None = Field(
        default=None,
        description="Set when the administrator who holds the CVR is its group's: the company above it "
        "(parent, grandparent, ...) whose administrator has it (S14)",
    )
    rejected_at: datetime


class TakeoverNotified(BaseModel):
    """An administrator told of a takeover, or disabled by it, and how to reach them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: UUID
    name: str
    email: str
    language: Language = "da"


class TakeoverRequested(_IdentityUsers):
    """Someone asked, through the company's e-Boks, to take over its administration (S2, beyond
    S3): a new first-administrator login is pending, usable from `usable_from`; the
    administrators listed were told by email and SMS, each with a link that cancels it."""

    KEY_FIELD = "cvr"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID = Field(description="The new administrator's login, pending")
    application_id: UUID
    requested_at: datetime
    usable_from: datetime
    expires_at: datetime
    notified: list[TakeoverNotified]


class TakeoverCancelled(_IdentityUsers):
    """An administrator cancelled the takeover (by the link in the notice, or in the portal):
    its login is withdrawn, the letter's code no longer works."""

    KEY_FIELD = "cvr"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID
    by_user_id: UUID | None = Field(
        default=None, description="The administrator who cancelled it; none when support deleted its login"
    )
    cancelled_at: datetime


class TakeoverExpired(_IdentityUsers):
    """The takeover's code was not used in time: its login is withdrawn."""

    KEY_FIELD = "cvr"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID
    expired_at: datetime


class TakeoverCompleted(_IdentityUsers):
    """The takeover's code was used after the notice period: the new administrator is active,
    and the company's former administrators (`disabled`) are disabled and told by email."""

    KEY_FIELD = "cvr"

    takeover_id: UUID
    cvr: Cvr
    company_name: str
    user_id: UUID
    new_administrator_name: str
    disabled: list[TakeoverNotified]
    completed_at: datetime


# --- identity.credentials -------------------------------------------------------------------


class _IdentityCredentials(Event):
    TOPIC = IDENTITY_CREDENTIALS
    KEY_FIELD = "cvr"


class Applicant(BaseModel):
    """Who applied for the login (S1), as the letter shows it, so that a company that did not
    apply knows what happened. Contact details are masked: the letter needs only to be
    recognisable, and they are no part of the login (the person who activates sets their own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    email: str = Field(description="Masked, e.g. `m•••@example.dk`")
    mobile: str = Field(description="Masked, e.g. `+45 •• •• •4 56`")
    applied_at: datetime


class CredentialsIssued(_IdentityCredentials):
    """A username and a sealed activation code to deliver to the company's e-Boks (S2)."""

    KEY_FIELD = "recipient_cvr"

    user_id: UUID
    application_id: UUID | None = None
    recipient_cvr: Cvr
    company_name: str
    username: str
    activation_code: SealedSecret
    expires_at: datetime
    deliver_by: datetime
    channel: Literal["eboks"] = "eboks"
    language: Language = "da"
    applicant: Applicant | None = None
    takeover_usable_from: datetime | None = Field(
        default=None,
        description="Set for a takeover's letter: the code works only from then, after the notice "
        "period (`takeover_notice_hours`) in which the company's administrators may cancel it",
    )
    takeover_notice_hours: int | None = None

    @staticmethod
    def sealing_context(user_id: UUID) -> str:
        """Associated data that binds the sealed code to this event type and user."""
        return f"{CredentialsIssued.TYPE}:{user_id}"


class LoginCreated(_IdentityCredentials):
    """An administrator created a login for a colleague (S4–S6): email them the username and
    a sealed activation code."""

    KEY_FIELD = "tenant_cvr"

    user_id: UUID
    tenant_cvr: Cvr
    company_name: str
    name: str
    recipient_email: str
    username: str
    activation_code: SealedSecret
    expires_at: datetime
    created_by_name: str
    language: Language = "da"

    @staticmethod
    def sealing_context(user_id: UUID) -> str:
        return f"{LoginCreated.TYPE}:{user_id}"


class TakeoverNoticeIssued(_IdentityCredentials):
    """Tell one of the company's administrators, by email and by SMS, that a takeover of its
    administration was asked for, when it can be used, and how to cancel it: `cancel_token`
    (sealed) goes into the portal's link."""

    takeover_id: UUID
    notice_id: UUID
    user_id: UUID
    cvr: Cvr = Field(description="The company whose administration is to be taken over")
    company_name: str
    name: str
    email: str
    mobile: str = Field(description="E.164")
    language: Language = "da"
    requested_at: datetime
    usable_from: datetime
    cancel_token: SealedSecret
    applicant: Applicant | None = None

    @staticmethod
    def sealing_context(notice_id: UUID) -> str:
        return f"{TakeoverNoticeIssued.TYPE}:{notice_id}"


# --- identity.audit -------------------------------------------------------------------------


class _IdentityAudit(Event):
    TOPIC = IDENTITY_AUDIT


class AuditRecorded(_IdentityAudit):
    """Who did what to whom, when and from where: every admin and support action (S13), every
    login's success, failure and lock, and every change of a second factor.

    A failed login with a username nobody has has no actor: `actor_id` and `actor_role` are
    unset and `subject_username` says which name was tried."""

    audit_id: UUID
    actor_id: UUID | None = None
    actor_role: Literal["administrator", "user", "support"] | None = None
    action: str
    target_user_id: UUID | None = None
    tenant_cvr: Cvr | None = None
    client_address: str | None = None
    at: datetime
    subject_username: str | None = Field(
        default=None, description="The username a login was tried with, when no user has it"
    )
    details: dict[str, Any] = Field(
        default_factory=dict, description="What exactly happened, by action (docs/identity.md, Audit trail)"
    )

    def key(self) -> str:
        return self.tenant_cvr or "staff"


# --- identity.otp ---------------------------------------------------------------------------


class _IdentityOtp(Event):
    TOPIC = IDENTITY_OTP
    KEY_FIELD = "user_id"


class OtpRequested(_IdentityOtp):
    """A one-time code to send to a user's mobile (SMS) or email (S7); the code is sealed.

    `confirm_mobile` and `confirm_email` codes confirm the contact details a person gives when
    activating the login from the company's letter; their `challenge_id` is the activation's id.
    An `unlock_login` code is a device token sent to the user's own email while failed passwords
    lock their username; its `challenge_id` is the trusted device's id. A `reset_password` code
    resets a forgotten password: first by email, then (the second factor) by SMS; its
    `challenge_id` is the reset's id. `confirm_new_email` and
    `confirm_new_mobile` codes go to the new address a user gives for their own login, which
    changes only when the code comes back; their `challenge_id` is the change's id."""

    user_id: UUID
    challenge_id: UUID
    purpose: Literal[
        "login",
        "confirm_mobile",
        "confirm_email",
        "unlock_login",
        "reset_password",
        "confirm_new_email",
        "confirm_new_mobile",
    ]
    channel: Literal["sms", "email"]
    recipient: str = Field(description="E.164 mobile number for sms, email address for email")
    code: SealedSecret
    expires_at: datetime
    language: Language = "da"

    @staticmethod
    def sealing_context(challenge_id: UUID) -> str:
        return f"{OtpRequested.TYPE}:{challenge_id}"
