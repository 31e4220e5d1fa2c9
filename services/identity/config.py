from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.identity.passwords import (
    OWASP_MEMORY_KIB,
    OWASP_PARALLELISM,
    OWASP_TIME_COST,
    PasswordHashing,
    too_weak,
)
from shared.settings import Environment, ServiceSettings
from shared.tokens import TokenError, TokenSigner, development_signing_keys, parse_signing_keys


class IdentitySettings(ServiceSettings):
    service: ClassVar[str] = "identity"
    uses_sealing: ClassVar[bool] = True
    default_http_port: ClassVar[int] = 8002
    model_config = SettingsConfigDict(env_prefix="ADGANG_IDENTITY_", extra="ignore")

    activation_code_ttl: timedelta = timedelta(days=7)
    activation_max_failures: int = Field(default=5, ge=1, le=10)
    password_min_length: int = Field(default=12, ge=12)
    # Password hashing (argon2id, S7): OWASP's minimum by default; weaker settings are refused
    # (docs/security.md, Password hashing). Hashes of other parameters are redone at the next
    # right password.
    password_hash_memory_kib: int = Field(default=OWASP_MEMORY_KIB, le=4 * 1024 * 1024)
    password_hash_time_cost: int = Field(default=OWASP_TIME_COST, le=100)
    password_hash_parallelism: int = Field(default=OWASP_PARALLELISM, le=64)
    # Threads that check and hash passwords, each keeping its argon2 block (memory_kib) once
    # used: none set means one per core.
    password_hash_workers: int | None = Field(default=None, ge=1, le=64)
    activation_rate_limit_per_minute: int = Field(default=30, ge=0)
    activation_confirmation_ttl: timedelta = Field(default=timedelta(minutes=15), le=timedelta(hours=1))
    # Support sends the letter of a company's first administrator again (S3): that many letters
    # of one login a day at most (the first letter counts), each due in the company's e-Boks in
    # the time S2 gives the first.
    letters_per_login_per_day: int = Field(default=3, ge=1, le=10)
    resent_letter_deadline: timedelta = Field(default=timedelta(hours=2), gt=timedelta(0))

    # Tokens (S7): short-lived signed access tokens, rotating refresh tokens.
    signing_keys: SecretStr | None = None
    signing_active_key_id: str | None = None
    # At most 30 minutes: billing keeps ended sessions at least that long (ENDED_SESSIONS_KEPT).
    access_token_ttl: timedelta = Field(
        default=timedelta(minutes=5), gt=timedelta(0), le=timedelta(minutes=30)
    )
    refresh_token_ttl: timedelta = timedelta(hours=12)
    # Login with two factors (S7).
    login_challenge_ttl: timedelta = timedelta(minutes=10)
    otp_ttl: timedelta = Field(default=timedelta(minutes=5), le=timedelta(minutes=10))
    otp_max_attempts: int = Field(default=5, ge=1, le=10)
    otp_max_sends: int = Field(default=3, ge=1, le=10)
    otp_resend_cooldown: timedelta = timedelta(seconds=30)
    login_rate_limit_per_minute: int = Field(default=30, ge=0)
    login_free_failures: int = Field(default=3, ge=1)
    login_lock_after_failures: int = Field(default=10, ge=2)
    login_lock_duration: timedelta = timedelta(minutes=15)
    # A device that completed a two-factor login passes a lock on its username.
    trusted_device_ttl: timedelta = timedelta(days=90)
    trusted_devices_per_user: int = Field(default=10, ge=1, le=100)
    login_counters_purge_interval_s: float = Field(default=600.0, gt=0)
    # Audit entries of failed logins with usernames nobody has (no company, support's only) are
    # deleted this long after: strangers can add them from every address they have
    # (docs/identity.md, Audit trail), and only recent ones help support see an attack.
    audit_unknown_usernames_retention: timedelta = Field(default=timedelta(days=30), ge=timedelta(days=1))
    # While the username is locked, the user may have an unlock code (a device token) emailed.
    unlock_code_ttl: timedelta = Field(default=timedelta(hours=1), le=timedelta(hours=24))
    unlock_emails_per_day: int = Field(default=3, ge=1, le=10)
    # Replacing the second factor, creating a login, re-sending an activation code and changing
    # where a login's codes go need a login this recent (or, for the second factor, a current code).
    reauthentication_window: timedelta = timedelta(minutes=15)
    # A forgotten password (docs/identity.md, "Forgotten password"): the emailed code lives this
    # long, and the whole reset (email code, second factor, new password) at most this long.
    password_reset_code_ttl: timedelta = Field(default=timedelta(minutes=10), le=timedelta(minutes=30))
    password_reset_ttl: timedelta = Field(default=timedelta(minutes=30), le=timedelta(hours=2))
    # Reset requests (every step) per client address; answered with 429 and Retry-After.
    password_reset_rate_limit_per_minute: int = Field(default=10, ge=0)
    # Reset emails per login: at most this many a day, and one per cooldown. Past either, the
    # answer is the same 202 and nothing is sent, so the limit tells nobody the login exists.
    password_reset_emails_per_day: int = Field(default=3, ge=1, le=10)
    password_reset_email_cooldown: timedelta = Field(default=timedelta(minutes=1), le=timedelta(hours=1))
    # A user's own change of email or mobile: the code sent to the new address lives this long.
    contact_change_ttl: timedelta = Field(
        default=timedelta(minutes=15), ge=timedelta(minutes=1), le=timedelta(minutes=15)
    )
    # Codes to new addresses (own changes of email or mobile) one user may have sent a day.
    contact_changes_per_day: int = Field(default=6, ge=1, le=50)
    # Taking over a company's administration through its e-Boks: the letter's code works only
    # after this notice period, in which the company's administrators are told and may cancel.
    takeover_notice_period: timedelta = Field(default=timedelta(hours=72), ge=timedelta(hours=1))
    takeover_expiry_check_interval_s: float = Field(default=300.0, gt=0)
    cancel_link_rate_limit_per_minute: int = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _password_hashing_is_not_weaker_than_owasp(self) -> IdentitySettings:
        weak = too_weak(
            memory_kib=self.password_hash_memory_kib,
            time_cost=self.password_hash_time_cost,
            parallelism=self.password_hash_parallelism,
        )
        if weak:
            raise ValueError(weak)
        return self

    def password_hashing(self) -> PasswordHashing:
        return PasswordHashing(
            memory_kib=self.password_hash_memory_kib,
            time_cost=self.password_hash_time_cost,
            parallelism=self.password_hash_parallelism,
            workers=self.password_hash_workers,
        )

    @model_validator(mode="after")
    def _signing_keys_are_configured_in_production(self) -> IdentitySettings:
        if self.environment is Environment.production and (
            not self.signing_keys or not self.signing_active_key_id
        ):
            raise ValueError("signing_keys and signing_active_key_id must be set in production")
        if self.signing_keys is not None:
            try:
                self.signer()
            except TokenError as exc:
                raise ValueError(str(exc)) from exc
        return self

    def signer(self) -> TokenSigner:
        if self.signing_keys is not None:
            ring = parse_signing_keys(self.signing_keys.get_secret_value())
            return TokenSigner(ring, self.signing_active_key_id or next(iter(ring)))
        spec, active = development_signing_keys(self.var_dir)
        return TokenSigner(parse_signing_keys(spec), active)
