from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, VerifiesAccessTokens


class BillingSettings(VerifiesAccessTokens):
    service: ClassVar[str] = "billing"
    default_http_port: ClassVar[int] = 8003
    model_config = SettingsConfigDict(env_prefix="ADGANG_BILLING_", extra="ignore")

    seed_demo_data: bool | None = None  # unset: seed in development and test, never in production
    demo_extra_customers: int = Field(default=0, ge=0, le=100_000)
    demo_size: Literal["small", "large"] = Field(
        default="small", description="large adds a company with over a million invoice lines (benchmarks)"
    )

    # Sessions identity ended one by one (logout, a reused refresh token) are refused until
    # their access tokens have expired anyway, then forgotten (S12).
    ended_sessions_kept: timedelta = Field(default=timedelta(hours=1), ge=timedelta(minutes=30))
    ended_sessions_purge_interval_s: float = Field(default=600.0, gt=0)

    # Invoices (S8): the monthly run issues the newest closed month; payment terms in days.
    invoice_run_enabled: bool = True
    invoice_run_interval_s: float = Field(default=3600.0, gt=0)
    invoice_payment_days: int = Field(default=14, ge=0, le=90)
    # The notifier fetches the documents it delivers (PDF, OIOUBL, Peppol) from
    # /internal/v1/invoices/{id}/document with this bearer token; unset, that path answers 404.
    document_reader_token: SecretStr | None = Field(
        default=None, min_length=32, description="Bearer token (32 characters or more) with which the notifier reads invoice documents "
        "at /internal/v1/invoices/<id>/document; unset, that path answers 404."
    )
    # Documents render in worker threads beside the event loop, this many at once for users and
    # as many for the notifier: more asking at the same time wait their turn instead of taking
    # all threads (and the CPU) from the API, and users never hold up the notifier's deliveries.
    document_render_concurrency: int = Field(
        default=2,
        ge=1,
        le=32,
        description="How many invoice documents (PDF, OIOUBL, Peppol) billing renders at once for "
        "users, and as many for the notifier; about the number of CPU cores billing may use for each.",
    )
    # Orders (S9): how often received orders are provisioned.
    order_fulfilment_interval_s: float = Field(default=2.0, gt=0)

    @property
    def seeds_demo_data(self) -> bool:
        if self.seed_demo_data is not None:
            return self.seed_demo_data
        return self.environment is not Environment.production
