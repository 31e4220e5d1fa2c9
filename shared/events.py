"""Every event on the bus: its payload model, its CloudEvents type and its topic.

Topics are `<service>.<stream>`; the key is the aggregate's id (CVR for company streams, user
id for user streams) so that one aggregate's events stay in order. Payloads are the contract
with downstream subscribers: add optional fields freely, change a field only with a new
version of the type (`.v2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.sealing import SealedSecret

Cvr = Annotated[str, Field(pattern=r"^\d{8}$", description="Danish CVR number, 8 digits")]
Function = Literal["invoices", "orders", "master_data", "telephony", "user_admin"]
ALL_FUNCTIONS: tuple[Function, ...] = (
    "invoices",
    "orders",
    "master_data",
    "telephony",
    "user_admin",
)
Language = Literal["da", "en"]


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    description: str
    compacted: bool = False  # a registry: the newest event per key is the state

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


BILLING_CUSTOMERS = Topic(
    "billing.customers", 3, "cvr", "Customers, their group structure and accounts", compacted=True
)
BILLING_ORDERS = Topic("billing.orders", 3, "cvr", "Orders and upgrades of subscriptions")
BILLING_INVOICES = Topic("billing.invoices", 3, "cvr", "Invoices issued")
BILLING_MASTERDATA = Topic("billing.masterdata", 3, "cvr", "Master data and invoice format changes")
BILLING_SUBSCRIPTIONS = Topic(
    "billing.subscriptions", 3, "cvr", "Settings of subscriptions: telephony and Personligt Nummer"
)
ONBOARDING_APPLICATIONS = Topic("onboarding.applications", 3, "cvr", "Applications for self-service access")
IDENTITY_USERS = Topic(
    "identity.users", 3, "user id (cvr for tenant-level events)", "Users and their lifecycle"
)
IDENTITY_CREDENTIALS = Topic("identity.credentials", 3, "cvr", "Credentials to deliver (sealed)")
IDENTITY_OTP = Topic("identity.otp", 3, "user id", "One-time codes to deliver (sealed)")
IDENTITY_AUDIT = Topic(
    "identity.audit", 3, "tenant cvr", "Audit trail: logins, second factors, admin and support actions"
)
NOTIFIER_DELIVERIES = Topic("notifier.deliveries", 3, "recipient", "Outcome of every delivery")
BILLING_AUDIT = Topic("billing.audit", 3, "cvr", "Audit trail of billing changes: orders, upgrades, settings")

TOPICS: tuple[Topic, ...] = (
    BILLING_CUSTOMERS,
    BILLING_ORDERS,
    BILLING_INVOICES,
    BILLING_MASTERDATA,
    BILLING_SUBSCRIPTIONS,
    ONBOARDING_APPLICATIONS,
    IDENTITY_USERS,
    IDENTITY_CREDENTIALS,
    IDENTITY_OTP,
    IDENTITY_AUDIT,
    NOTIFIER_DELIVERIES,
    BILLING_AUDIT,
)


class Event(BaseModel):
    """Base of every payload. `TYPE` is the CloudEvents type, `TOPIC` where it is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    TOPIC: ClassVar[Topic]
    SOURCE: ClassVar[str]

    def key(self) -> str:
        raise NotImplementedError

    def subject(self) -> str:
        return self.key()


# --- billing.customers ----------------------------------------------------------------------


class AccountRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account_number: str = Field(pattern=r"^\d{6,12}$")
    name: str


class CustomerRegistered(Event):
    """A company is a customer; `parent_cvr` places it in its group (S8, S14)."""

    TYPE = "dk.adgang.billing.CustomerRegistered.v1"
    TOPIC = BILLING_CUSTOMERS
    SOURCE = "/adgang/billing"

    cvr: Cvr
    name: str
    parent_cvr: Cvr | None = None
    accounts: list[AccountRef]
    registered_at: datetime

    def key(self) -> str:
        return self.cvr


# --- billing.orders -------------------------------------------------------------------------

Ore = Annotated[int, Field(description="An amount in øre (1/100 DKK); money is never a float")]


class SubscriptionOrdered(Event):
    """A user ordered a new subscription on one of their accounts (S9); it is pending until
    provisioned (`OrderCompleted`). The notifier emails the orderer a confirmation."""

    TYPE = "dk.adgang.billing.SubscriptionOrdered.v1"
    TOPIC = BILLING_ORDERS
    SOURCE = "/adgang/billing"

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    product_code: str
    product_name: str
    monthly_fee_ore: Ore
    options: dict[str, str | int | bool | None] = Field(default_factory=dict)
    ordered_by: UUID = Field(description="The user id of the person who ordered")
    ordered_at: datetime

    def key(self) -> str:
        return self.cvr


class SubscriptionUpgraded(Event):
    """A subscription moved to another product along an allowed upgrade path (S9)."""

    TYPE = "dk.adgang.billing.SubscriptionUpgraded.v1"
    TOPIC = BILLING_ORDERS
    SOURCE = "/adgang/billing"

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    identifier: str
    from_product_code: str
    to_product_code: str
    to_product_name: str
    monthly_fee_ore: Ore
    ordered_by: UUID
    upgraded_at: datetime

    def key(self) -> str:
        return self.cvr


class OrderCompleted(Event):
    """An ordered subscription is provisioned and active, with its number or line id."""

    TYPE = "dk.adgang.billing.OrderCompleted.v1"
    TOPIC = BILLING_ORDERS
    SOURCE = "/adgang/billing"

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    identifier: str
    completed_at: datetime

    def key(self) -> str:
        return self.cvr


# --- billing.invoices -----------------------------------------------------------------------


class InvoiceDelivery(BaseModel):
    """How the account chose to receive its invoices when this one was issued (S10): a format
    changed later applies from the next invoice."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    email: str | None = Field(default=None, description="pdf_email: where the PDF goes")
    gln: str | None = Field(default=None, description="oioubl: the buyer's GLN/EAN location number")
    peppol_scheme: str | None = Field(default=None, description="peppol: the endpoint scheme (0088, 0184, 0198)")
    peppol_id: str | None = Field(default=None, description="peppol: the endpoint id in that scheme")


class InvoiceIssued(Event):
    """An account's invoice for a period is issued; users with the `invoices` function for the
    account are told by email (S8), and the notifier delivers the document as `delivery` says
    (absent on invoices issued before documents were delivered: only the email then)."""

    TYPE = "dk.adgang.billing.InvoiceIssued.v1"
    TOPIC = BILLING_INVOICES
    SOURCE = "/adgang/billing"

    invoice_id: UUID
    invoice_number: str
    cvr: Cvr
    company_name: str
    account_number: str
    period_start: date
    period_end: date
    issued_on: date
    due_on: date
    amount_excl_vat_ore: Ore
    vat_ore: Ore
    amount_incl_vat_ore: Ore
    currency: Literal["DKK"] = "DKK"
    delivery: InvoiceDelivery | None = None
    # The language the company's documents are written in (the customer's, S10).
    language: Language = "da"

    def key(self) -> str:
        return self.cvr


# --- billing.masterdata ---------------------------------------------------------------------


class MasterDataChanged(Event):
    """A company's master data (stamdata) changed (S10); `version` is the new ETag version."""

    TYPE = "dk.adgang.billing.MasterDataChanged.v1"
    TOPIC = BILLING_MASTERDATA
    SOURCE = "/adgang/billing"

    cvr: Cvr
    street: str
    postal_code: str
    city: str
    contact_name: str
    contact_email: str
    contact_phone: str
    # The language of the company's invoices and documents (from the next invoice on).
    language: Language = "da"
    version: int
    changed_by: UUID
    changed_at: datetime

    def key(self) -> str:
        return self.cvr


class InvoiceFormatChanged(Event):
    """How an account's invoices are sent changed (S10): PDF by email, OIOUBL to a GLN/EAN
    number, Peppol, or paper."""

    TYPE = "dk.adgang.billing.InvoiceFormatChanged.v1"
    TOPIC = BILLING_MASTERDATA
    SOURCE = "/adgang/billing"

    cvr: Cvr
    account_number: str
    format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    email: str | None = None
    gln: str | None = None
    peppol_scheme: str | None = None
    peppol_id: str | None = None
    version: int
    changed_by: UUID
    changed_at: datetime

    def key(self) -> str:
        return self.cvr


# --- billing.subscriptions ------------------------------------------------------------------


class SubscriptionSettingsChanged(Event):
    """Telephony or Personligt Nummer settings of a subscription changed (S11)."""

    TYPE = "dk.adgang.billing.SubscriptionSettingsChanged.v1"
    TOPIC = BILLING_SUBSCRIPTIONS
    SOURCE = "/adgang/billing"

    subscription_id: UUID
    cvr: Cvr
    account_number: str
    identifier: str
    product_kind: str
    settings: dict[str, Any]
    version: int
    changed_by: UUID
    changed_at: datetime

    def key(self) -> str:
        return self.cvr


# --- onboarding.applications ----------------------------------------------------------------


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    email: str
    mobile: str = Field(description="E.164")


class ApplicationSubmitted(Event):
    """A company applied for self-service access (S1); its letter is due by `deliver_by` (S2)."""

    TYPE = "dk.adgang.onboarding.ApplicationSubmitted.v1"
    TOPIC = ONBOARDING_APPLICATIONS
    SOURCE = "/adgang/onboarding"

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

    def key(self) -> str:
        return self.cvr


class ApplicationFailed(Event):
    """No usable letter came of the application (undeliverable, or the deadline passed without
    one): the login issued for it, if any, is withdrawn so that the company can apply again."""

    TYPE = "dk.adgang.onboarding.ApplicationFailed.v1"
    TOPIC = ONBOARDING_APPLICATIONS
    SOURCE = "/adgang/onboarding"

    application_id: UUID
    cvr: Cvr
    reason: Literal["delivery-failed", "deadline-missed"]
    failed_at: datetime

    def key(self) -> str:
        return self.cvr


# --- identity.users -------------------------------------------------------------------------


class Grant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cvr: Cvr
    accounts: Literal["all"] | list[str]


class UserCreated(Event):
    TYPE = "dk.adgang.identity.UserCreated.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return str(self.user_id)


class UserActivated(Event):
    TYPE = "dk.adgang.identity.UserActivated.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    user_id: UUID
    tenant_cvr: Cvr
    role: Literal["administrator", "user"]
    activated_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class CredentialChanged(Event):
    """A password or second factor was set or changed: tell the user through another channel
    (email), so a change they did not make does not go unnoticed. A changed email or mobile
    number (`contact_details_changed`) is told at the email the login had; a changed mobile
    number also by SMS to the number it had (`old_mobile`)."""

    TYPE = "dk.adgang.identity.CredentialChanged.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return str(self.user_id)


class UserDisabled(Event):
    """The login is disabled: its sessions are ended; refuse its tokens at once."""

    TYPE = "dk.adgang.identity.UserDisabled.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    user_id: UUID
    tenant_cvr: Cvr
    by_user_id: UUID | None = None
    disabled_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class UserEnabled(Event):
    TYPE = "dk.adgang.identity.UserEnabled.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    user_id: UUID
    tenant_cvr: Cvr
    by_user_id: UUID | None = None
    enabled_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class UserGrantsChanged(Event):
    """What the user may see and do changed; sessions were ended, so tokens carry the new grants."""

    TYPE = "dk.adgang.identity.UserGrantsChanged.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    user_id: UUID
    tenant_cvr: Cvr
    grants: list[Grant]
    functions: list[Function]
    by_user_id: UUID | None = None
    changed_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class UserDetailsChanged(Event):
    """A user's name, email, mobile or language changed (where and how to reach them, not what
    they may do)."""

    TYPE = "dk.adgang.identity.UserDetailsChanged.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return str(self.user_id)


class UserDeleted(Event):
    """A login is gone for good; its sessions end and its CVR may get a new administrator (S3)."""

    TYPE = "dk.adgang.identity.UserDeleted.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return str(self.user_id)


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


class SessionEnded(Event):
    """One login session ended before its time: the user logged out, or a refresh token of
    it was presented a second time (it may have been copied). Refuse its access tokens at once
    (S12); the user's other sessions go on. Disabling, re-granting or deleting a user ends all
    their sessions and is told by the user's own event (`UserDisabled`, `UserGrantsChanged`,
    `UserDeleted`), not by this one."""

    TYPE = "dk.adgang.identity.SessionEnded.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    user_id: UUID
    session_id: UUID = Field(description="The `sid` claim of the session's access tokens")
    reason: SessionEndReason
    ended_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class AdministratorProvisioningRejected(Event):
    """Identity would not create an administrator for an application (e.g. one exists)."""

    TYPE = "dk.adgang.identity.AdministratorProvisioningRejected.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return self.cvr


class TakeoverNotified(BaseModel):
    """An administrator told of a takeover, or disabled by it, and how to reach them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    user_id: UUID
    name: str
    email: str
    language: Language = "da"


class TakeoverRequested(Event):
    """Someone asked, through the company's e-Boks, to take over its administration (S2, beyond
    S3): a new first-administrator login is pending, usable from `usable_from`; the
    administrators listed were told by email and SMS, each with a link that cancels it."""

    TYPE = "dk.adgang.identity.TakeoverRequested.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID = Field(description="The new administrator's login, pending")
    application_id: UUID
    requested_at: datetime
    usable_from: datetime
    expires_at: datetime
    notified: list[TakeoverNotified]

    def key(self) -> str:
        return self.cvr


class TakeoverCancelled(Event):
    """An administrator cancelled the takeover (by the link in the notice, or in the portal):
    its login is withdrawn, the letter's code no longer works."""

    TYPE = "dk.adgang.identity.TakeoverCancelled.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID
    by_user_id: UUID | None = Field(
        default=None, description="The administrator who cancelled it; none when support deleted its login"
    )
    cancelled_at: datetime

    def key(self) -> str:
        return self.cvr


class TakeoverExpired(Event):
    """The takeover's code was not used in time: its login is withdrawn."""

    TYPE = "dk.adgang.identity.TakeoverExpired.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    takeover_id: UUID
    cvr: Cvr
    user_id: UUID
    expired_at: datetime

    def key(self) -> str:
        return self.cvr


class TakeoverCompleted(Event):
    """The takeover's code was used after the notice period: the new administrator is active,
    and the company's former administrators (`disabled`) are disabled and told by email."""

    TYPE = "dk.adgang.identity.TakeoverCompleted.v1"
    TOPIC = IDENTITY_USERS
    SOURCE = "/adgang/identity"

    takeover_id: UUID
    cvr: Cvr
    company_name: str
    user_id: UUID
    new_administrator_name: str
    disabled: list[TakeoverNotified]
    completed_at: datetime

    def key(self) -> str:
        return self.cvr


# --- identity.credentials -------------------------------------------------------------------


class Applicant(BaseModel):
    """Who applied for the login (S1), as the letter shows it, so that a company that did not
    apply knows what happened. Contact details are masked: the letter needs only to be
    recognisable, and they are no part of the login (the person who activates sets their own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    email: str = Field(description="Masked, e.g. `m•••@example.dk`")
    mobile: str = Field(description="Masked, e.g. `+45 •• •• •4 56`")
    applied_at: datetime


class CredentialsIssued(Event):
    """A username and a sealed activation code to deliver to the company's e-Boks (S2)."""

    TYPE = "dk.adgang.identity.CredentialsIssued.v1"
    TOPIC = IDENTITY_CREDENTIALS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return self.recipient_cvr

    @staticmethod
    def sealing_context(user_id: UUID) -> str:
        """Associated data that binds the sealed code to this event type and user."""
        return f"{CredentialsIssued.TYPE}:{user_id}"


class LoginCreated(Event):
    """An administrator created a login for a colleague (S4–S6): email them the username and
    a sealed activation code."""

    TYPE = "dk.adgang.identity.LoginCreated.v1"
    TOPIC = IDENTITY_CREDENTIALS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return self.tenant_cvr

    @staticmethod
    def sealing_context(user_id: UUID) -> str:
        return f"{LoginCreated.TYPE}:{user_id}"


class TakeoverNoticeIssued(Event):
    """Tell one of the company's administrators, by email and by SMS, that a takeover of its
    administration was asked for, when it can be used, and how to cancel it: `cancel_token`
    (sealed) goes into the portal's link."""

    TYPE = "dk.adgang.identity.TakeoverNoticeIssued.v1"
    TOPIC = IDENTITY_CREDENTIALS
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return self.cvr

    @staticmethod
    def sealing_context(notice_id: UUID) -> str:
        return f"{TakeoverNoticeIssued.TYPE}:{notice_id}"


# --- identity.audit -------------------------------------------------------------------------


class AuditRecorded(Event):
    """Who did what to whom, when and from where: every admin and support action (S13), every
    login's success, failure and lock, and every change of a second factor.

    A failed login with a username nobody has has no actor: `actor_id` and `actor_role` are
    unset and `subject_username` says which name was tried."""

    TYPE = "dk.adgang.identity.AuditRecorded.v1"
    TOPIC = IDENTITY_AUDIT
    SOURCE = "/adgang/identity"

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


class OtpRequested(Event):
    """A one-time code to send to a user's mobile (SMS) or email (S7); the code is sealed.

    `confirm_mobile` and `confirm_email` codes confirm the contact details a person gives when
    activating the login from the company's letter; their `challenge_id` is the activation's id.
    An `unlock_login` code is a device token sent to the user's own email while failed passwords
    lock their username; its `challenge_id` is the trusted device's id. A `reset_password` code
    resets a forgotten password: first by email, then (the second factor) by SMS; its
    `challenge_id` is the reset's id. `confirm_new_email` and
    `confirm_new_mobile` codes go to the new address a user gives for their own login, which
    changes only when the code comes back; their `challenge_id` is the change's id."""

    TYPE = "dk.adgang.identity.OtpRequested.v1"
    TOPIC = IDENTITY_OTP
    SOURCE = "/adgang/identity"

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

    def key(self) -> str:
        return str(self.user_id)

    @staticmethod
    def sealing_context(challenge_id: UUID) -> str:
        return f"{OtpRequested.TYPE}:{challenge_id}"


# --- billing.audit --------------------------------------------------------------------------


class BillingAuditRecorded(Event):
    """Who changed what in billing, for which company and account, when and from where
    (S9–S11): an order, an upgrade, master data, an invoice format, a subscription's settings.
    Published in the transaction of the change; identity keeps them in its audit trail so a
    company's administrators read one trail (`GET /v1/audit`)."""

    TYPE = "dk.adgang.billing.AuditRecorded.v1"
    TOPIC = BILLING_AUDIT
    SOURCE = "/adgang/billing"

    audit_id: UUID
    actor_id: UUID
    action: str
    cvr: Cvr
    account_number: str | None = None
    target: str = Field(description="What was changed: an order, a subscription, an account or a company")
    details: dict[str, Any] = Field(default_factory=dict)
    client_address: str | None = None
    at: datetime

    def key(self) -> str:
        return self.cvr


# --- notifier.deliveries --------------------------------------------------------------------

Channel = Literal["eboks", "email", "sms"]


class _DeliveryOutcome(Event):
    TOPIC = NOTIFIER_DELIVERIES
    SOURCE = "/adgang/notifier"

    delivery_id: UUID
    source_event_id: str
    source_event_type: str
    application_id: UUID | None = None
    channel: Channel
    recipient: str
    message_id: str
    attempts: int

    def key(self) -> str:
        return self.recipient


class DeliverySucceeded(_DeliveryOutcome):
    TYPE = "dk.adgang.notifier.DeliverySucceeded.v1"
    delivered_at: datetime


class DeliveryFailed(_DeliveryOutcome):
    TYPE = "dk.adgang.notifier.DeliveryFailed.v1"
    reason: str
    failed_at: datetime


class DeliverySlaBreached(_DeliveryOutcome):
    """The delivery deadline passed with the message undelivered (S2: 2 hours)."""

    TYPE = "dk.adgang.notifier.DeliverySlaBreached.v1"
    deliver_by: datetime
    detected_at: datetime


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        CustomerRegistered,
        SubscriptionOrdered,
        SubscriptionUpgraded,
        OrderCompleted,
        InvoiceIssued,
        MasterDataChanged,
        InvoiceFormatChanged,
        SubscriptionSettingsChanged,
        ApplicationSubmitted,
        ApplicationFailed,
        UserCreated,
        UserActivated,
        CredentialChanged,
        UserDisabled,
        UserEnabled,
        UserGrantsChanged,
        UserDetailsChanged,
        UserDeleted,
        SessionEnded,
        AdministratorProvisioningRejected,
        TakeoverRequested,
        TakeoverCancelled,
        TakeoverExpired,
        TakeoverCompleted,
        CredentialsIssued,
        LoginCreated,
        TakeoverNoticeIssued,
        AuditRecorded,
        OtpRequested,
        DeliverySucceeded,
        DeliveryFailed,
        DeliverySlaBreached,
        BillingAuditRecorded,
    )
}
