"""The request and response models of the routes for administrators and support: users,
companies, support's operations, the audit trail and takeovers (`schemas.py`: a login's own)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from services.identity.audit import AuditFilter, Cursor
from services.identity.models import AuditEntry
from services.identity.schemas import GrantOut
from shared.clock import as_utc
from shared.events import Function
from shared.validation import CvrNumber, DanishMobile, EmailAddress


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cvr: CvrNumber = Field(max_length=16)
    accounts: Literal["all"] | list[Annotated[str, Field(pattern=r"^[0-9]{6,12}$")]] = Field(
        description='"all" (full access, S5.5) or the account numbers the user may use (limited access)'
    )


class UserIn(BaseModel):
    """The create-user wizard (S5): details, companies, accounts, functions."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    email: EmailAddress = Field(max_length=320, description="The login email is sent here (S6)")
    mobile: DanishMobile = Field(max_length=32, description="Danish mobile number; login codes go here (S7)")
    grants: list[GrantIn] = Field(max_length=200)
    functions: list[Function] = Field(max_length=5)
    language: Literal["da", "en"] = Field(
        default="da", description="The user's codes, notices and emails (the login email too) are in it"
    )


class UserPatch(BaseModel):
    """Change details, companies, accounts or functions; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailAddress | None = Field(default=None, max_length=320)
    mobile: DanishMobile | None = Field(default=None, max_length=32)
    grants: list[GrantIn] | None = Field(default=None, max_length=200)
    functions: list[Function] | None = Field(default=None, max_length=5)


class UserOut(BaseModel):
    id: str
    username: str
    name: str
    email: str
    mobile: str
    role: str
    status: Literal["pending", "active", "disabled", "expired"] = Field(
        description="`expired`: never activated, and the activation code has expired; "
        "resend-activation sends a new code with a new expiry"
    )
    grants: list[GrantOut]
    functions: list[str]
    created_at: datetime
    activated_at: datetime | None
    login_locked_until: datetime | None = Field(
        default=None,
        description="Failed passwords have locked the username until then; POST .../unlock lifts the lock",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="A login not yet activated (`pending` or `expired`): when its activation code "
        "stops working (or stopped); resend-activation emails a new code with a new expiry",
    )
    activation_expires_at: datetime | None = Field(
        default=None, deprecated=True, description="The same as `expires_at`; kept for older clients"
    )
    language: Literal["da", "en"] = Field(
        default="da", description="The language of the user's codes, notices and emails, and of their portal"
    )


class CompanyOut(BaseModel):
    cvr: str
    name: str
    parent_cvr: str | None
    accounts: list[str]
    all_accounts: bool = Field(description="Whether you hold every account, and so may grant 'all'")


class SupportUserOut(BaseModel):
    id: str
    username: str
    name: str
    email: str
    role: str
    status: str = Field(
        description="`pending`, `active`, `disabled`, or `expired` (never activated, code expired)"
    )
    functions: list[str]
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None = Field(
        default=None,
        description="A login not yet activated: when its activation code stops (or stopped) working",
    )
    login_locked_until: datetime | None = Field(
        default=None,
        description="Failed passwords have locked the username until then; POST .../unlock lifts the lock",
    )


class LetterOut(BaseModel):
    """The new letter, on its way to the company's e-Boks."""

    user_id: str
    username: str
    recipient_cvr: str
    expires_at: datetime = Field(description="When the new activation code expires")
    deliver_by: datetime = Field(description="When the letter is due in the company's e-Boks (S2)")


class AuditOut(BaseModel):
    id: str
    at: datetime
    actor_id: str | None = Field(description="Who acted; none for a login tried with a username nobody has")
    actor_role: str | None
    action: str = Field(description="What was done: the actions are listed in docs/identity.md, Audit trail")
    target_user_id: str | None
    tenant_cvr: str | None = Field(
        description="The company: an identity entry's tenant, a billing entry's company changed"
    )
    client_address: str | None
    source: Literal["identity", "billing"] = "identity"
    subject_username: str | None = Field(
        default=None, description="The username a login was tried with, when no user has it"
    )
    account_number: str | None = Field(default=None, description="The account a billing change concerns")
    target: str | None = Field(
        default=None,
        description="What a billing change changed: an order, a subscription, an account, a company",
    )
    details: dict[str, Any] = Field(default_factory=dict)
    cursor: str = Field(description="Send as `before` for the entries after this one (the next page)")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id,
            at=as_utc(entry.at),
            actor_id=entry.actor_id,
            actor_role=entry.actor_role,
            action=entry.action,
            target_user_id=entry.target_user_id,
            tenant_cvr=entry.tenant_cvr,
            client_address=entry.client_address,
            source=entry.source,  # type: ignore[arg-type]
            subject_username=entry.subject_username,
            account_number=entry.account_number,
            target=entry.target,
            details=entry.details or {},
            cursor=Cursor.of(entry).encode(),
        )


AUDIT_PAGING = (
    "Newest first. Filters: `from` (inclusive) and `to` (exclusive), ISO 8601 times (without a "
    "zone: UTC); `action`, a prefix of the action (`login.` gives every login entry); `user_id`, "
    "entries where that user acted or was acted on. Paging: at most `limit` entries; the next "
    "page is `before=` the `cursor` of the last entry. A bad filter is a 422 naming it."
)


class AuditQuery(BaseModel):
    """The filters and page both audit reads take."""

    model_config = ConfigDict(populate_by_name=True)

    since: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    action: str | None = Field(default=None, pattern=r"^[a-z0-9_.-]{1,50}$")
    user_id: str | None = Field(default=None, max_length=36)
    before: str | None = Field(default=None, max_length=200)

    def filter(self, *, limit: int, cvr: str | None = None) -> AuditFilter:
        return AuditFilter.checked(
            limit=limit,
            since=self.since,
            until=self.to,
            action=self.action,
            user_id=self.user_id,
            cvr=cvr,
            before=self.before,
        )


class CancelTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cancel_token: SecretStr = Field(
        min_length=1, max_length=200, description="The token of the link in the takeover notice"
    )


class TakeoverOut(BaseModel):
    """A takeover of a company's administration, as the administrators may see it."""

    id: str
    cvr: str
    company_name: str
    status: str = Field(description="`open`, `cancelled`, `expired` or `completed`")
    requested_at: datetime
    usable_from: datetime = Field(description="From then, the letter's code takes over the administration")
    expires_at: datetime = Field(description="The letter's code stops working then")
    applicant_name: str = Field(description="The name given in the application; not proof of anything")
    cancel_link_used: bool | None = Field(
        default=None, description="Only for a lookup by cancel link: whether that link was used"
    )
