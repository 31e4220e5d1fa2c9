from __future__ import annotations

from email.headerregistry import Address
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.notifier.email import SmtpTls, parse_mailbox
from services.notifier.sms import SENDER_PATTERN
from shared.settings import Environment, VerifiesAccessTokens

# Where `adgang sinks` listens by default: the development stand-ins for a mail server and an
# SMS gateway (docs/notifications.md).
SINK_SMTP_PORT = 8025
SINK_SMS_PORT = 8005
SINK_SMS_URL = f"http://127.0.0.1:{SINK_SMS_PORT}/v1/sms"
DEVELOPMENT_SMS_TOKEN = "adgang-development-sms-token"  # noqa: S105 - known to the local sink only
DEVELOPMENT_EMAIL_FROM = "Adgang Selvbetjening <no-reply@adgang.localhost>"
_STANDARD_SMTP_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}


class NotifierSettings(VerifiesAccessTokens):
    service: ClassVar[str] = "notifier"
    uses_sealing: ClassVar[bool] = True
    default_http_port: ClassVar[int] = 8004
    model_config = SettingsConfigDict(env_prefix="ADGANG_NOTIFIER_", extra="ignore")

    eboks_transport: Literal["spool", "http"] = "spool"
    eboks_spool_dir: Path | None = None
    eboks_http_url: str | None = None
    eboks_client_cert: Path | None = None
    eboks_client_key: Path | None = None
    eboks_ca_bundle: Path | None = None
    eboks_http_timeout_s: float = 10.0

    # Invoice documents (S10): fetched from billing, handed over as each account chose.
    billing_url: str = Field(
        default="http://127.0.0.1:8003",
        description=(
            "Billing's HTTP API, where the worker fetches an issued invoice's PDF, OIOUBL or Peppol "
            "document to deliver it (`/internal/v1/invoices/<id>/document`, docs/notifications.md)."
        ),
    )
    billing_document_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token for billing's internal document route; billing's "
            "`ADGANG_BILLING_DOCUMENT_READER_TOKEN` must be the same. `adgang run` generates one "
            "for both. Unset (in development): invoice documents are not delivered, and say why."
        ),
    )
    billing_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one request for a document to billing, in seconds."
    )
    billing_document_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "The largest invoice document taken from billing, in bytes; a larger answer is read no "
            "further and its delivery fails, saying so."
        ),
    )
    einvoice_transport: Literal["spool", "http"] = Field(
        default="spool",
        description=(
            "How OIOUBL and Peppol invoices leave: `spool` writes them as files for a separate upload "
            "job, `http` posts them to the contracted access point (docs/notifications.md)."
        ),
    )
    einvoice_spool_dir: Path | None = Field(
        default=None,
        description=(
            "Directory the `spool` transport writes `<format>/<endpoint>/<invoice id>.xml` into. "
            "Unset: `<var_dir>/einvoice`."
        ),
    )
    einvoice_http_url: str | None = Field(
        default=None, description="The access point's endpoint for invoices; required when the transport is `http`."
    )
    einvoice_http_token: SecretStr | None = Field(
        default=None, description="Bearer token for the access point, if it wants one."
    )
    einvoice_client_cert: Path | None = Field(
        default=None,
        description="Client certificate (PEM) for mutual TLS with the access point; give with the key.",
    )
    einvoice_client_key: Path | None = Field(
        default=None, description="Private key (PEM) of the access point's client certificate."
    )
    einvoice_ca_bundle: Path | None = Field(
        default=None,
        description="CA certificates that verify the access point. Unset: certifi's trust store, or `SSL_CERT_FILE`.",
    )
    einvoice_http_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one request to the access point, in seconds."
    )
    print_spool_dir: Path | None = Field(
        default=None,
        description=(
            "Directory invoices on paper are written into as `<invoice id>.pdf`, for the print "
            "provider's pickup. Unset: `<var_dir>/print`."
        ),
    )

    email_smtp_host: str | None = None
    email_smtp_port: int | None = Field(default=None, ge=1, le=65535)
    email_smtp_username: str | None = None
    email_smtp_password: SecretStr | None = None
    email_smtp_tls: SmtpTls | None = None
    email_smtp_timeout_s: float = Field(default=10.0, gt=0)
    email_from: str | None = None

    sms_gateway_url: str | None = None
    sms_gateway_token: SecretStr | None = None
    sms_gateway_timeout_s: float = Field(default=10.0, gt=0)
    sms_sender: str = Field(default="Adgang", pattern=SENDER_PATTERN)

    operator_cvr: str = Field(default="29311005", pattern=r"^[0-9]{8}$")
    operator_name: str = "Adgang Erhverv"
    portal_url: str | None = None

    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_retry_base_s: float = 2.0
    delivery_retry_max_s: float = 300.0
    delivery_lease_s: float | None = Field(default=None, gt=0)
    delivery_concurrency: int = Field(default=32, ge=1, le=128)
    dispatch_interval_s: float = 1.0
    sla_check_interval_s: float = 30.0

    @model_validator(mode="after")
    def _letters_name_the_real_portal_in_production(self) -> NotifierSettings:
        if self.environment is Environment.production and not self.portal_url:
            raise ValueError("portal_url (where letters send people to activate) must be set in production")
        return self

    @field_validator("email_from")
    @classmethod
    def _email_from_is_a_mailbox(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mailbox(value)
        return value

    @field_validator("billing_document_token", "einvoice_http_token")
    @classmethod
    def _an_empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would be sent as `Authorization: Bearer `, which nobody should accept.
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("billing_url")
    @classmethod
    def _billing_url_is_http(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError("billing_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _the_einvoice_access_point_is_named(self) -> NotifierSettings:
        if self.einvoice_transport == "http":
            url = self.einvoice_http_url or ""
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError("einvoice_http_url, an http(s) URL, is required for the http e-invoice transport")
        return self

    @field_validator("sms_gateway_url")
    @classmethod
    def _sms_gateway_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname
        ):
            raise ValueError("sms_gateway_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _mail_and_sms_are_configured_in_production(self) -> NotifierSettings:
        # In development they default to the local sinks; in production a code sent there is lost.
        if self.environment is Environment.production:
            missing = [
                name
                for name in ("email_smtp_host", "email_from", "sms_gateway_url", "sms_gateway_token")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"{', '.join(missing)} must be set in production (S7: codes by email and SMS)"
                )
        return self

    @model_validator(mode="after")
    def _billing_documents_are_readable_in_production(self) -> NotifierSettings:
        # Without it no invoice document is delivered (S10); billing would refuse every one.
        if self.environment is Environment.production and self.billing_document_token is None:
            raise ValueError(
                "billing_document_token must be set in production (billing's DOCUMENT_READER_TOKEN): "
                "invoice documents are fetched from billing with it"
            )
        return self

    def lease_seconds(self, channel: str) -> float:
        """How long an attempt may hold a delivery on a channel: longer than that channel's worst
        case, so another worker never takes over a message that is still being sent, and no
        longer, so a crashed worker's messages are taken over soon."""
        if self.delivery_lease_s is not None:
            return self.delivery_lease_s
        # HttpRetry's worst case: 4 attempts that time out, 3 waits of at most 8 s; then a margin.
        # An invoice's document is fetched from billing first (one request), then handed over.
        worst = {
            "sms": 4 * self.sms_gateway_timeout_s + 8 * 3,
            "email": 4 * self.email_smtp_timeout_s + self.billing_timeout_s,
            "eboks": 4 * self.eboks_http_timeout_s + 8 * 3 if self.eboks_transport == "http" else 0.0,
            "einvoice": self.billing_timeout_s
            + (4 * self.einvoice_http_timeout_s + 8 * 3 if self.einvoice_transport == "http" else 0.0),
            "print": self.billing_timeout_s,
        }
        return worst[channel] + 20

    @property
    def development(self) -> bool:
        return self.environment is not Environment.production

    @property
    def smtp_host(self) -> str:
        return self.email_smtp_host or "127.0.0.1"

    @property
    def smtp_tls(self) -> SmtpTls:
        """Unset: none for the local sink in development, STARTTLS in production."""
        return self.email_smtp_tls or ("none" if self.development else "starttls")

    @property
    def smtp_port(self) -> int:
        """Unset: the mail sink's port in development, the standard port of the TLS mode in production."""
        if self.email_smtp_port is not None:
            return self.email_smtp_port
        return SINK_SMTP_PORT if self.development else _STANDARD_SMTP_PORTS[self.smtp_tls]

    @property
    def mail_sender(self) -> Address:
        return parse_mailbox(self.email_from or DEVELOPMENT_EMAIL_FROM)

    @property
    def sms_url(self) -> str:
        return self.sms_gateway_url or SINK_SMS_URL

    @property
    def sms_token(self) -> SecretStr:
        return self.sms_gateway_token or SecretStr(DEVELOPMENT_SMS_TOKEN)

    @property
    def sinks_dir(self) -> Path:
        """Where `adgang sinks` keeps the mail and SMS it receives (development only)."""
        return self.var_dir / "sinks"

    @property
    def portal_address(self) -> str:
        """The portal that letters and emails link to (its `/aktiver` page for activation); the
        local portal when unset in development (production requires `portal_url`)."""
        return self.portal_url or "http://127.0.0.1:8000"

    @property
    def spool_dir(self) -> Path:
        return self.eboks_spool_dir or self.var_dir / "eboks"

    @property
    def einvoice_dir(self) -> Path:
        return self.einvoice_spool_dir or self.var_dir / "einvoice"

    @property
    def print_dir(self) -> Path:
        return self.print_spool_dir or self.var_dir / "print"
