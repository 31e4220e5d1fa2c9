"""docs/configuration.md, rendered from the settings classes: one table per service.

The settings classes are the truth; this module only explains them. `python -m
services.configuration_doc` rewrites the document, `--check` fails when it is out of date, and
so does a unit test.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.registry import SERVICES, ServiceParts
from shared.sealing import generate_key
from shared.settings import Environment, ServiceSettings
from shared.tokens import generate_signing_key

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "configuration.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"

# What each setting does, by field name. `{service}` and `{port}` are filled in per service.
# A field's own `description=` takes precedence over this table.
EXPLANATIONS: dict[str, str] = {
    # every service (shared/settings.py)
    "environment": (
        "`production` refuses to start unless the settings marked *required* are set, and turns "
        "off development conveniences (the generated key ring, the notifier's local inbox views)."
    ),
    "var_dir": (
        "Directory for the process's local files: the SQLite database and the development key "
        "ring when those are not configured, and `run/{service}-worker.ready` (`run/{service}-api.ready`), "
        "which the worker (the API) writes with its process id once it has started. Must be writable."
    ),
    "database_url": (
        "SQLAlchemy async URL of the {service} database, e.g. "
        "`postgresql+asyncpg://user:password@host:5432/{service}` (the password URL-encoded). "
        "The service is the only one that uses this database."
    ),
    "kafka_bootstrap_servers": (
        "Kafka brokers, `host:port[,host:port…]`. The default is where `adgang run` starts the "
        "embedded broker."
    ),
    "kafka_session_timeout_s": (
        "Seconds without a heartbeat after which Kafka drops a worker from its consumer group and "
        "hands its partitions to another. Short, so that a restarted worker does not wait for its "
        "dead predecessor (faust's own default is 60 s)."
    ),
    "kafka_heartbeat_interval_s": "Seconds between a worker's heartbeats; well below the session timeout.",
    "http_host": "Address the API listens on; `0.0.0.0` inside a container.",
    "http_port": "Port the API listens on.",
    "http_reuse_port": (
        "`true`: the API binds its port with SO_REUSEPORT, so that several API processes of "
        "{service} on one host serve the same port and the kernel spreads connections among "
        "them (every one of them sets it; `adgang run --instances N` does). Where the system has "
        "no SO_REUSEPORT the API refuses to start; give each process its own `HTTP_PORT` instead."
    ),
    "instance": (
        "Which of {service}'s API or worker processes on this host this is, from 1: process n "
        "writes `run/{service}-worker.<n>.ready` (`.<n>` left out for 1) and keeps faust's data "
        "in `faust/{service}-worker.<n>` under `var_dir`. Set it when several run on one host and "
        "share a `var_dir`; in containers, where each has its own, leave it at 1."
    ),
    "log_level": "Logging level: `DEBUG`, `INFO`, `WARNING` or `ERROR`.",
    "log_format": (
        "`json` (one object per line) or `text` (one record per line: line breaks in a message "
        "are escaped and a traceback's lines indented), for the API and the worker."
    ),
    "sealing_keys": (
        "Key ring that seals activation and one-time codes on the bus: `kid:key[,kid:key…]`, each "
        "key 32 random bytes in base64url (`shared.sealing.generate_key()`). Every listed key can "
        "unseal, so keep the old key listed while rotating. Outside production, when unset, a key "
        "ring is generated once in `<var_dir>/dev-sealing-keys.json`."
    ),
    "sealing_active_key_id": "Which key of the key ring seals new values.",
    "outbox_poll_interval_s": (
        "Seconds between the outbox relay's polls for events to publish; events the worker commits "
        "itself are relayed at once."
    ),
    "trust_forwarded_for": (
        "Behind a reverse proxy: take the client address (rate limits, audit records, access log) "
        "from `X-Forwarded-For`, but only from a peer in `TRUSTED_PROXIES`, and the nearest address "
        "those proxies did not add. Off: the address of the connection, whatever the header says. "
        "Requires `TRUSTED_PROXIES`. API only."
    ),
    "trusted_proxies": (
        "The reverse proxies whose `X-Forwarded-For` is believed, as the API sees them: IP "
        "addresses or networks, comma-separated (`10.0.0.2,10.1.0.0/16`); `*` is refused."
    ),
    "max_request_body_bytes": (
        "Largest request body accepted; a larger one is answered 413 at once when "
        "`Content-Length` says so, and as soon as the limit is passed for a chunked body."
    ),
    "api_docs_enabled": (
        "Serve the API's documentation: `/docs`, `/redoc` and `/openapi.json` (404 when off)."
    ),
    "metrics_token": (
        "Bearer token `/metrics` requires (`Authorization: Bearer <token>`, else 401), *secret*. "
        "In production `/metrics` is served only when this is set; in development without it "
        "`/metrics` is open."
    ),
    "worker_metrics_port": (
        "Port on which the service's worker serves `/metrics` (the same token rule as the API's) "
        "and `/healthz`; unset, the worker serves none. Each instance of a worker on one host needs "
        "its own port (docs/operations.md)."
    ),
    "clock_offset_file": (
        "Tests only, refused in production: a file holding an offset in seconds that is added to the "
        "service's clock at every reading, so a test moves the time of every process of a suite at once "
        "(the browser tests pass a takeover's notice period with it). A missing or empty file is no offset."
    ),
    # onboarding
    "delivery_deadline": (
        "Time from an application to the deadline for delivering the credentials letter "
        "(`deliver_by`; S2 says 2 hours)."
    ),
    "rate_limit_per_minute": (
        "Applications accepted from one client address (an IPv6 address's /64) in any 60 seconds, "
        "counted in onboarding's database, so across every instance of the API; more are answered 429 "
        "with `Retry-After`. `0` turns the limit off."
    ),
    "applications_per_cvr": (
        "Applications (so letters to the company's e-Boks) accepted for one CVR within "
        "`APPLICATIONS_PER_CVR_WINDOW`, whoever sends them; more are answered 429 with `Retry-After`. "
        "Failed and rejected applications, which sent no letter, do not count."
    ),
    "applications_per_cvr_window": "The window `APPLICATIONS_PER_CVR` counts in (ISO 8601 duration or seconds).",
    # identity
    "activation_code_ttl": "How long an activation code is valid after it is issued.",
    "activation_max_failures": "Wrong activation codes after which the code is locked.",
    "deadline_check_interval_s": (
        "Seconds between checks for applications still in flight after their `deliver_by` (they fail)."
    ),
    "password_min_length": "Shortest password accepted.",
    "password_hash_memory_kib": (
        "Memory of one argon2id password hash, in KiB (OWASP's minimum, 19 MiB, by default). "
        "Settings weaker than OWASP's minimum for argon2id (19456 KiB, time cost 2, parallelism 1) "
        "are refused at start-up. A login whose hash was made with other parameters gets a new hash "
        "at its next right password (docs/security.md, Password hashing)."
    ),
    "password_hash_time_cost": "Passes of one argon2id password hash over its memory (at least 2).",
    "password_hash_parallelism": (
        "Lanes of one argon2id password hash (at least 1). More lanes let one hash use more cores at "
        "once; on a busy server, where every core already has a login to hash, 1 serves the most "
        "logins per second."
    ),
    "password_hash_workers": (
        "Threads of each identity process that check and hash passwords; unset means one per core. "
        "Each keeps the memory of one verification (`PASSWORD_HASH_MEMORY_KIB`) from its first one "
        "on, instead of taking it from the system and giving it back every time (about 10 ms of page "
        "faults a check). More threads than cores make logins wait longer, not go faster."
    ),
    "signing_keys": (
        "Key ring that signs access tokens, `kid:base64url-raw-Ed25519-key,...`, *secret*. Unset in "
        "development: a key ring made once per `var/`. Required in production."
    ),
    "signing_active_key_id": "The key id that signs new access tokens; the others still verify (rotation).",
    "access_token_ttl": (
        "Lifetime of an access token (ISO 8601 duration or seconds); at most 30 minutes, the least "
        "billing keeps an ended session (`ADGANG_BILLING_ENDED_SESSIONS_KEPT`)."
    ),
    "refresh_token_ttl": "Lifetime of a login session and its refresh tokens.",
    "login_challenge_ttl": "How long the second step of a login may take after the password.",
    "otp_ttl": "Lifetime of a one-time code sent by SMS or email; at most 10 minutes.",
    "otp_max_attempts": (
        "Wrong one-time codes allowed per login before it must start again; also wrong pairs of "
        "confirmation codes per activation of the login from the company's letter."
    ),
    "otp_max_sends": "One-time codes that may be sent per login.",
    "otp_resend_cooldown": (
        "Shortest time between two codes sent for one login, and between two starts of the "
        "activation of the login from the company's letter (each sends an SMS and an email)."
    ),
    "login_rate_limit_per_minute": "Login requests one client address may make per minute; 0 turns the limit off.",
    "login_free_failures": "Failed passwords for a username before each further try must wait (progressive delay).",
    "login_lock_after_failures": "Failed passwords that lock a username (whether or not it exists).",
    "login_lock_duration": "How long a locked username stays locked.",
    "trusted_device_ttl": (
        "How long a device token from a two-factor login lets that browser or app past a lock on its username."
    ),
    "trusted_devices_per_user": "Trusted devices kept per user; the least recently used go first.",
    "unlock_code_ttl": (
        "How long an unlock code emailed to a locked-out user (`POST /v1/login/unlock`) lets a new "
        "browser or app past the lock."
    ),
    "unlock_emails_per_day": (
        "Unlock emails one login receives in 24 hours at most (and one per lock duration), "
        "whoever asks for them."
    ),
    "login_counters_purge_interval_s": (
        "How often the identity worker deletes failure counters that count nothing any more, expired trusted "
        "devices, password resets older than a day, and audit entries of unknown usernames past their retention."
    ),
    "audit_unknown_usernames_retention": (
        "How long the audit trail keeps failed logins with usernames nobody has (support's only): anyone can "
        "add them, up to the per-address login limit a minute from each address."
    ),
    "reauthentication_window": (
        "How recent a login must be to create a login, re-send an activation code, change a login's "
        "mobile or email, or set up a new authenticator app without a code from the current one."
    ),
    "password_reset_code_ttl": (
        "How long the code emailed for a forgotten password (`POST /v1/password-reset`) stays valid. "
        "At most 30 minutes."
    ),
    "password_reset_ttl": (
        "How long a password reset may take from the request to the new password (email code, second "
        "factor, password); then it starts again. At most 2 hours."
    ),
    "password_reset_rate_limit_per_minute": (
        "Password reset requests (every step) one client address may make per minute; 0 turns the limit off."
    ),
    "password_reset_emails_per_day": (
        "Reset emails one login receives in 24 hours at most, whoever asks; past it the answer is the "
        "same 202 and nothing is sent."
    ),
    "password_reset_email_cooldown": (
        "The least time between two reset emails to one login; a request sooner sends nothing and "
        "answers the same 202."
    ),
    "contact_change_ttl": (
        "How long the code sent to a new email address or mobile number a user gives for their own "
        "login stays valid; the change takes effect only with it. 1 to 15 minutes."
    ),
    "contact_changes_per_day": (
        "Codes to a new email address or mobile number (a user's own change) one user may have sent in 24 "
        "hours, both fields together; past it 429 with Retry-After. Each sends an SMS or email to an "
        "address the user chooses."
    ),
    "activation_rate_limit_per_minute": (
        "Activation requests (starts and confirmations) one client address may make per minute; 0 turns "
        "the limit off."
    ),
    "activation_confirmation_ttl": (
        "How long the SMS and email codes that confirm the mobile number and email of the login from "
        "the company's letter stay valid; then the activation starts again with the letter's code. "
        "At most 1 hour."
    ),
    "letters_per_login_per_day": (
        "How many letters with the login of a company's first administrator may go to the "
        "company's e-Boks in 24 hours, the application's letter included: support's "
        "`POST /v1/support/users/{{id}}/resend-letter` answers 429 past it (S3)."
    ),
    "resent_letter_deadline": (
        "When a letter support sent again is due in the company's e-Boks (`deliver_by`, S2); the "
        "notifier announces `DeliverySlaBreached` when it is not delivered by then."
    ),
    "takeover_notice_period": (
        "How long after a takeover of a company's administration is asked for (an application with "
        "`takeover`) its letter's code can first be used: the company's administrators are told by "
        "email and SMS and may cancel it meanwhile. The letter states it. At least 1 hour."
    ),
    "takeover_expiry_check_interval_s": (
        "How often the identity worker ends the takeovers whose code was not used in time "
        "(`TakeoverExpired`; the takeover's login is withdrawn)."
    ),
    "cancel_link_rate_limit_per_minute": (
        "Look-ups and uses of takeover cancel links one client address may make per minute; 0 turns "
        "the limit off."
    ),
    # billing
    "seed_demo_data": (
        "Load the demo data (`services/billing/demo.py`: customers, subscriptions, twelve months of "
        "usage and invoices) when the worker starts; idempotent. Unset: yes in development and test, "
        "no in production."
    ),
    "demo_size": (
        "`small` (the demo group and a standalone company) or `large` (adds a company with 1,300 "
        "accounts and over a million invoice lines, for benchmarks)."
    ),
    "identity_jwks_url": (
        "Identity's JWKS: the public keys that verify access tokens (S7). Onboarding and the "
        "notifier verify support staff's tokens with them on their support routes (S13)."
    ),
    "jwks_cache_seconds": "How long fetched keys are trusted before they are fetched again.",
    "jwks_min_refetch_seconds": (
        "A token with a key id the cached keys lack makes the service fetch the keys again (a new "
        "signing key), at most once this many seconds after the last fetch; until then such "
        "tokens are refused without a fetch."
    ),
    "ended_sessions_kept": (
        "How long billing refuses the access tokens of a session ended by logout or by a reused "
        "refresh token (`SessionEnded`); at least 30 minutes, the longest an access token may live "
        "(`ADGANG_IDENTITY_ACCESS_TOKEN_TTL`, 5 minutes by default); after it the session's row is purged."
    ),
    "ended_sessions_purge_interval_s": "How often the worker purges ended sessions older than `ENDED_SESSIONS_KEPT`.",
    "invoice_run_enabled": "Whether the worker issues the newest closed month's invoices by itself (S8).",
    "invoice_run_interval_s": "How often the worker's invoice run looks for accounts not yet invoiced.",
    "invoice_payment_days": "Payment terms: days from the issue date to the due date.",
    "order_fulfilment_interval_s": "How often received orders for new subscriptions are provisioned (S9).",
    "demo_extra_customers": (
        "Generated standalone customers to seed besides the demo group, for benchmarks and load "
        "tests (only with `seed_demo_data`)."
    ),
    # notifier
    "eboks_transport": (
        "How letters reach e-Boks: `spool` writes them as files for a separate upload job, `http` "
        "posts them to the contracted endpoint (docs/eboks.md)."
    ),
    "eboks_spool_dir": "Directory the `spool` transport writes `<cvr>/<messageUUID>.xml` into.",
    "eboks_http_url": "The e-Boks sender endpoint; required when the transport is `http`.",
    "eboks_client_cert": "Client certificate (PEM) for mutual TLS with the endpoint; give with the key.",
    "eboks_client_key": "Private key (PEM) of the client certificate.",
    "eboks_ca_bundle": (
        "CA certificates that verify the endpoint. Unset: certifi's trust store, or `SSL_CERT_FILE`."
    ),
    "eboks_http_timeout_s": "Timeout of one request to the endpoint, in seconds.",
    "email_smtp_host": (
        "Mail server (SMTP relay) that one-time codes by email go through (S7). Unset: `127.0.0.1`, "
        "where `adgang sinks` runs the local mail sink (docs/notifications.md)."
    ),
    "email_smtp_port": (
        "Port of the mail server. Unset: 8025 (the mail sink) in development; in production the "
        "standard port of `EMAIL_SMTP_TLS`: 465 for `tls`, 587 for `starttls`, 25 for `none`."
    ),
    "email_smtp_username": "Login at the mail server, if it wants one; give with the password.",
    "email_smtp_password": "Password of the mail server login.",
    "email_smtp_tls": (
        "`tls` (TLS from the first byte, port 465), `starttls` (plain, then upgraded; refused "
        "without it) or `none`. Unset: `none` for the sink in development, `starttls` in production."
    ),
    "email_smtp_timeout_s": "Timeout of each step of talking to the mail server, in seconds.",
    "email_from": (
        "Sender of the mails, `Display Name <address>`; the Message-ID uses its domain. Unset (in "
        "development): `Adgang Selvbetjening <no-reply@adgang.localhost>`."
    ),
    "sms_gateway_url": (
        "The SMS gateway's send endpoint (JSON POST, docs/notifications.md). Unset (in development): "
        "`http://127.0.0.1:8005/v1/sms`, the SMS sink of `adgang sinks`."
    ),
    "sms_gateway_token": (
        "Bearer token for the SMS gateway. Unset (in development): the token the local SMS sink expects."
    ),
    "sms_gateway_timeout_s": (
        "Timeout of one request to the SMS gateway, in seconds; a request is tried up to 4 times."
    ),
    "sms_sender": "Sender name shown on the phone: 1 to 11 letters, digits or spaces.",
    "operator_cvr": "CVR of the sender of the letters (MeMo `Sender`): the operator of Adgang.",
    "operator_name": "Name of the sender of the letters.",
    "portal_url": (
        "The portal's address: the letter and the colleague's email link to its /aktiver page "
        "with the username filled in (S2), billing's emails to the portal (unset in development: "
        "http://127.0.0.1:8000)."
    ),
    "onboarding_url": "Onboarding's HTTP API, as the portal calls it (the application form, S1).",
    "identity_url": "Identity's HTTP API, as the portal calls it (activation, login, users).",
    "billing_url": "Billing's HTTP API, as the portal calls it.",
    "notifier_url": "The notifier's HTTP API, as the portal calls it (deliveries, for support staff).",
    "service_timeout_s": "Seconds the portal waits for a service before it shows \"try again\".",
    "session_idle_timeout": (
        "A browser session ends after this long without a request; the user logs in again and "
        "returns to the page they were on."
    ),
    "session_max_age": "A browser session ends after this long in any case (identity's refresh token lives 12 hours).",
    "sessions_purge_interval_s": "Seconds between deletions of browser sessions that ended.",
    "delivery_max_attempts": (
        "Attempts to deliver a letter, mail or SMS before it is given up as failed. A one-time code "
        "is also given up when it expires undelivered."
    ),
    "delivery_retry_base_s": (
        "Wait after the first failed attempt, in seconds; it doubles with each further failure (with jitter)."
    ),
    "delivery_retry_max_s": "Longest wait between two attempts, in seconds.",
    "delivery_lease_s": (
        "Seconds a worker holds a delivery it is attempting; another worker takes it over after that. "
        "Unset: per channel, 20 s longer than that channel's worst case of retries (20 s for the "
        "e-Boks spool)."
    ),
    "delivery_concurrency": "Messages one worker sends at the same time (and claims at once).",
    "dispatch_interval_s": (
        "Seconds between looks for deliveries that are due, when no new one woke the dispatcher."
    ),
    "sla_check_interval_s": (
        "Seconds between checks for letters past their `deliver_by` deadline (`DeliverySlaBreached`)."
    ),
}

# The variables docker-compose.yml reads from the operator's environment (or `.env` file).
COMPOSE_VARIABLES: dict[str, str] = {
    "POSTGRES_PASSWORD": (
        "Password of the `adgang` database user, *secret*. Use URL-safe characters: it is also "
        "written into the services' database URLs."
    ),
    "ADGANG_SEALING_KEYS": "The sealing key ring, *secret*; becomes identity's and notifier's `SEALING_KEYS`.",
    "ADGANG_SEALING_ACTIVE_KEY_ID": "Becomes identity's and notifier's `SEALING_ACTIVE_KEY_ID`.",
    "ADGANG_SIGNING_KEYS": (
        "Ed25519 key ring that signs access tokens (`kid:key,...`, keys from "
        "`shared.tokens.generate_signing_key()`), *secret*; becomes `ADGANG_IDENTITY_SIGNING_KEYS`."
    ),
    "ADGANG_SIGNING_ACTIVE_KEY_ID": "Becomes `ADGANG_IDENTITY_SIGNING_ACTIVE_KEY_ID`.",
    "ADGANG_PORTAL_URL": (
        "The portal's public address (letters and emails link to its /aktiver page); becomes "
        "`ADGANG_NOTIFIER_PORTAL_URL`."
    ),
    "ADGANG_OPERATOR_CVR": "The operator's CVR; becomes `ADGANG_NOTIFIER_OPERATOR_CVR`.",
    "ADGANG_SMTP_HOST": "Mail relay for one-time codes by email; becomes `ADGANG_NOTIFIER_EMAIL_SMTP_HOST`.",
    "ADGANG_EMAIL_FROM": "Sender of those mails, `Name <address>`; becomes `ADGANG_NOTIFIER_EMAIL_FROM`.",
    "ADGANG_SMS_GATEWAY_URL": "The SMS gateway's send endpoint; becomes `ADGANG_NOTIFIER_SMS_GATEWAY_URL`.",
    "ADGANG_SMS_GATEWAY_TOKEN": "The SMS gateway's bearer token, *secret*; becomes `ADGANG_NOTIFIER_SMS_GATEWAY_TOKEN`.",
    "ADGANG_BILLING_SEED_DEMO_DATA": "`true` seeds the demo customers, for a demonstration.",
    "ADGANG_WORKER_REPLICAS": (
        "Containers of every service's worker (`deploy.replicas`); `docker compose up --scale "
        "<service>-worker=N` sets one service's. A service's workers share its topics' partitions "
        "(3 each): a fourth waits as a standby (docs/operations.md)."
    ),
    "ADGANG_API_REPLICAS": (
        "Containers of every service's API (`deploy.replicas`). Above 1, set each "
        "`ADGANG_<SERVICE>_API_HOST_PORTS` to a range of as many host ports."
    ),
    **{
        f"ADGANG_{name.upper()}_API_HOST_PORTS": (
            f"Host port, or range of host ports (`18001-18002`), the {name} API's containers are "
            "published on, one port per replica; the reverse proxy balances over them."
        )
        for name in ("onboarding", "identity", "billing", "notifier", "portal")
    },
    "ADGANG_BILLING_DOCUMENT_TOKEN": (
        "The token the notifier reads issued invoices' documents from billing with, *secret*, 32 "
        "characters or more (`secrets.token_urlsafe(32)`); becomes "
        "`ADGANG_BILLING_DOCUMENT_READER_TOKEN` and `ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN`."
    ),
    "ADGANG_TRUSTED_PROXIES": (
        "The reverse proxy (or proxies) in front of the APIs, as the API containers see it: IP "
        "addresses or networks, comma-separated; becomes every API's `TRUSTED_PROXIES`, with "
        "`TRUST_FORWARDED_FOR=true`."
    ),
    "ADGANG_METRICS_TOKEN": (
        "Bearer token the metrics scraper sends to every API's `/metrics`, *secret*; becomes "
        "every API's `METRICS_TOKEN`."
    ),
    "ADGANG_API_DOCS_ENABLED": "`true` serves `/docs` and `/openapi.json` on every API; off by default.",
    "ADGANG_IMAGE": "The application image, built from the Dockerfile (`docker build -t adgang:local .`).",
}

_INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")

# Where the declared default (None) is not what the reader needs to know.
EFFECTIVE_DEFAULTS: dict[str, str] = {
    "database_url": "SQLite at `<var_dir>/{service}.db`",
    "http_port": "`{port}`",
    "eboks_spool_dir": "`<var_dir>/eboks`",
    "email_smtp_host": "`127.0.0.1` in development",
    "email_smtp_port": "`8025` in development",
    "email_smtp_tls": "`none` in development, `starttls` in production",
    "email_from": "`Adgang Selvbetjening <no-reply@adgang.localhost>` in development",
    "sms_gateway_url": "`http://127.0.0.1:8005/v1/sms` in development",
    "sms_gateway_token": "the local sink's, in development",
    "sealing_active_key_id": "the first key",
    "api_docs_enabled": "on outside production, off in production",
    "trusted_proxies": "none",
}

_PROBE_VALUES: dict[Any, Any] = {bool: True, int: 1, float: 1.0, timedelta: 1}


def explanation(parts: ServiceParts, name: str, field: FieldInfo) -> str | None:
    text = field.description or EXPLANATIONS.get(name)
    if text is None:
        return None
    return _fill(text, parts)


def undocumented_settings() -> list[str]:
    """Variables without an explanation: settings with neither a `description=` nor an entry in
    EXPLANATIONS, and variables of docker-compose.yml missing from COMPOSE_VARIABLES."""
    missing = []
    for parts in SERVICES.values():
        for name, field in parts.settings_type().model_fields.items():
            if explanation(parts, name, field) is None:
                missing.append(parts.env_prefix + name.upper())
    if COMPOSE_FILE.exists():
        missing += [
            name for name in compose_variables(COMPOSE_FILE.read_text()) if name not in COMPOSE_VARIABLES
        ]
    return missing


def required_in_production(settings_type: type[ServiceSettings]) -> set[str]:
    """The settings without which `environment=production` does not validate.

    Found by trying, not listed by hand, so that the document follows the validators: with every
    unset setting given a value the settings validate; leaving out one that then fails marks it.
    """
    fields = settings_type.model_fields
    unset = [name for name, field in fields.items() if field.default is None]
    complete = {name: _probe_value(fields[name].annotation) for name in unset}
    # Values that are checked beyond their type: a key ring must parse and hold the active key.
    complete |= {"sealing_keys": f"probe:{generate_key()}", "sealing_active_key_id": "probe"}
    complete |= {"signing_keys": f"probe:{generate_signing_key()}", "signing_active_key_id": "probe"}
    complete |= {"email_from": "Probe <probe@example.dk>", "sms_gateway_url": "https://sms.example.dk/v1"}
    complete |= {"document_reader_token": "probe-" + "x" * 32}  # 32 characters at least
    complete["environment"] = Environment.production
    complete.pop("clock_offset_file", None)  # test only: production refuses it
    # model_validate, unlike the constructor, reads no environment variables.
    settings_type.model_validate(complete)
    required = set()
    for name in unset:
        try:
            settings_type.model_validate({k: v for k, v in complete.items() if k != name})
        except ValidationError:
            required.add(name)
    return required


def _probe_value(annotation: Any) -> Any:
    """Some valid value of a setting's type (for finding what production requires)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        member = next(arg for arg in get_args(annotation) if arg is not type(None))
        return _probe_value(member)
    if origin is Literal:
        return get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(iter(annotation))
    return _PROBE_VALUES.get(annotation, "probe")


def render_configuration_markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from the settings classes by `python -m services.configuration_doc`;",
        "     edit services/configuration_doc.py or the settings, not this file. -->",
        "",
        "Every Adgang process is configured by environment variables, one prefix per service",
        "(pydantic-settings; names are not case-sensitive). The same settings apply to a",
        "service's API and its worker.",
        "",
        "**The defaults are the embedded development mode** that `adgang run` and the tests use:",
        "SQLite files under `var/`, the embedded broker on `127.0.0.1:9092`, a sealing key ring",
        "generated once under `var/`, APIs on `127.0.0.1`. Production is",
        "`<PREFIX>ENVIRONMENT=production`, and then the settings marked **required** must be set;",
        "a process refuses to start without them. `docker-compose.yml` sets the production values.",
        "",
        "Values: booleans `true`/`false`; durations as seconds (`7200`) or ISO 8601 (`PT2H`,",
        "`P7D`); a setting shown as *unset* has no value unless given one. Secrets (marked",
        "*secret*) are never logged; give them from a secret store, never as a default.",
        "",
    ]
    for parts in SERVICES.values():
        lines += _service_section(parts)
    if COMPOSE_FILE.exists():
        lines += _compose_section(COMPOSE_FILE.read_text())
    return "\n".join(lines).rstrip("\n") + "\n"


def _service_section(parts: ServiceParts) -> list[str]:
    settings_type = parts.settings_type()
    required = required_in_production(settings_type)
    lines = [
        f"## {parts.name}",
        "",
        f"Prefix `{parts.env_prefix}`; the API's default port is {settings_type.default_http_port}.",
        "",
        "| Variable | Type | Default | Production | What it does |",
        "|---|---|---|---|---|",
    ]
    for name, field in settings_type.model_fields.items():
        cells = [
            f"`{parts.env_prefix}{name.upper()}`",
            _type_text(field),
            _default_text(parts, name, field),
            "**required**" if name in required else "",
            explanation(parts, name, field) or "*undocumented*",
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")
    return lines


def compose_variables(text: str) -> dict[str, tuple[bool, str | None]]:
    """Each `${NAME…}` in a compose file: whether it is required (`:?`) and its default (`:-`)."""
    found: dict[str, tuple[bool, str | None]] = {}
    for match in _INTERPOLATION.finditer(text):
        op = match["op"] or ""
        found.setdefault(match["name"], ("?" in op, match["arg"] if "-" in op else None))
    return found


def _compose_section(text: str) -> list[str]:
    lines = [
        "## docker compose",
        "",
        "`docker-compose.yml` sets the production values of the settings above and reads these",
        "variables from the environment or an `.env` file beside it. It refuses to start while a",
        "required one is missing; none has a default secret.",
        "",
        "| Variable | Required | Default | What it is |",
        "|---|---|---|---|",
    ]
    for name, (required, default) in sorted(compose_variables(text).items()):
        cells = [
            f"`{name}`",
            "**required**" if required else "",
            f"`{default}`" if default is not None else "",
            COMPOSE_VARIABLES.get(name, "*undocumented*"),
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")
    return lines


def _fill(text: str, parts: ServiceParts) -> str:
    return text.format(service=parts.name, port=parts.settings_type().default_http_port)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_text(field: FieldInfo) -> str:
    text = _annotation_text(field.annotation)
    limits = _limits_text(field)
    return f"{text} ({limits})" if limits else text


def _annotation_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(_annotation_text(member) for member in members)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        return f"comma-separated {_annotation_text(get_args(annotation)[0])}s"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
        timedelta: "duration",
        SecretStr: "string, *secret*",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits_text(field: FieldInfo) -> str:
    limits = []
    for item in field.metadata:
        if isinstance(item, Ge):
            limits.append(f"≥ {item.ge}")
        elif isinstance(item, Gt):
            limits.append(f"> {item.gt}")
        elif isinstance(item, Le):
            limits.append(f"≤ {item.le}")
        elif isinstance(item, Lt):
            limits.append(f"< {item.lt}")
        elif isinstance(item, MinLen):
            limits.append(f"length ≥ {item.min_length}")
        elif isinstance(item, MaxLen):
            limits.append(f"length ≤ {item.max_length}")
        elif pattern := getattr(item, "pattern", None):
            limits.append(f"matching `{pattern}`")
    return ", ".join(limits)


def _default_text(parts: ServiceParts, name: str, field: FieldInfo) -> str:
    if name in EFFECTIVE_DEFAULTS:
        return _fill(EFFECTIVE_DEFAULTS[name], parts)
    if field.default_factory is not None:
        return "*computed*"
    if field.default is PydanticUndefined:
        return "*none*"
    if field.default is None:
        return "*unset*"
    value = TypeAdapter(field.annotation or Any).dump_python(field.default, mode="json")
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/configuration.md from the settings classes.")
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render_configuration_markdown()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is out of date: run `python -m services.configuration_doc`", file=sys.stderr)
            return 1
        print(f"{DOCUMENT} is up to date")
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
