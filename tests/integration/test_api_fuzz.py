"""Whatever a client sends, the public APIs answer with their contract, never with a 500
(property-based, generated from each API's own OpenAPI document).

Every test run generates `ADGANG_FUZZ_EXAMPLES` requests per operation (25, new ones each run);
`make fuzz` runs 300 per operation, the long search that would slow every test run."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.identity.api import create_api as identity_api
from services.identity.config import IdentitySettings
from services.onboarding.api import create_api as onboarding_api
from services.onboarding.config import OnboardingSettings
from services.registry import SERVICES
from shared.db import migrate

EXAMPLES = int(os.environ.get("ADGANG_FUZZ_EXAMPLES", "25"))


def _onboarding(database_factory) -> object:
    url = database_factory("onboarding")
    migrate(SERVICES["onboarding"].migrations, url)
    return onboarding_api(OnboardingSettings(database_url=url, rate_limit_per_minute=0))


def _identity(database_factory) -> object:
    url = database_factory("identity")
    migrate(SERVICES["identity"].migrations, url)
    return identity_api(IdentitySettings(database_url=url, activation_rate_limit_per_minute=0))


def fuzz(app: object, headers: dict[str, str] | None = None) -> list[str]:
    """Every operation of the app's OpenAPI document, many generated requests each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/readyz":  # 503 while the broker is away is its job, not a fault
            continue
        valid_and_invalid = operation.as_strategy(
            generation_mode=GenerationMode.POSITIVE
        ) | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

        @given(case=valid_and_invalid)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            # A schema cannot say "check digit" or "Danish mobile": a request that fits the
            # schema may still be refused (422, naming the field), so that check is left out.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        run()
        exercised.append(operation.label)
    return exercised


def test_onboarding_answers_every_generated_request_by_its_contract(database_factory) -> None:
    assert "POST /v1/applications" in fuzz(_onboarding(database_factory))


def test_identity_answers_every_generated_request_by_its_contract(database_factory) -> None:
    assert "POST /v1/activation" in fuzz(_identity(database_factory))


def test_notifier_answers_every_generated_request_by_its_contract(database_factory, tmp_path) -> None:
    from services.notifier.api import create_api as notifier_api
    from services.notifier.config import NotifierSettings

    url = database_factory("notifier")
    migrate(SERVICES["notifier"].migrations, url)
    app = notifier_api(NotifierSettings(database_url=url, var_dir=tmp_path))
    assert "GET /dev/eboks/{cvr}" in fuzz(app)


def test_billing_answers_every_generated_request_by_its_contract(database_factory, tmp_path) -> None:
    """As a group administrator with every function, so requests reach the queries."""
    from datetime import UTC, datetime

    from services.billing.api import create_api as billing_api
    from services.billing.config import BillingSettings
    from shared.clock import FrozenClock
    from tests.integration.billing_fixtures import Tokens, seeded_billing_database

    url = database_factory("billing")
    seeded_billing_database(url, FrozenClock(datetime(2026, 11, 10, 9, 0, tzinfo=UTC)))
    tokens = Tokens(FrozenClock(datetime.now(UTC)))
    app = billing_api(
        BillingSettings(database_url=url, var_dir=tmp_path, identity_jwks_url="http://identity.test/jwks"),
        jwks_client=tokens.jwks_client(),
    )
    exercised = fuzz(app, headers=tokens.group_admin().headers)
    assert {
        "GET /v1/invoices",
        "POST /v1/orders",
        "PATCH /v1/subscriptions/{subscription_id}/settings",
    } <= set(exercised)
