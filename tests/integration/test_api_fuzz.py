"""Whatever a client sends, the public APIs answer with their contract, never with a 500
(property-based, generated from each API's own OpenAPI document).

Every test run generates `ADGANG_FUZZ_EXAMPLES` requests per operation (25, new ones each run);
`make fuzz` runs 300 per operation, the long search that would slow every test run.

Besides answering without a 500 and as documented, each API accepts every request its schema
allows (schemathesis's `positive_data_acceptance`): the schema states the rules the API enforces
(`shared.validation`). The two formats whose check digit no pattern can state, `cvr` and
`gln`, are generated here as their validators define them."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from services.identity.api import create_api as identity_api
from services.identity.config import IdentitySettings
from services.onboarding.api import create_api as onboarding_api
from services.onboarding.config import OnboardingSettings
from services.registry import SERVICES
from shared.db import migrate

EXAMPLES = int(os.environ.get("ADGANG_FUZZ_EXAMPLES", "25"))

pytestmark = pytest.mark.slow
# A NUL character is refused by every API before any route (`shared.web`, 422), a rule of the
# whole product with its own tests (`test_nul_characters.py`) rather than a pattern on each text
# field: no request generated here carries one.
CONFIG = SchemathesisConfig.from_dict({"generation": {"allow-x00": False}})


def _cvr(digits: list[int]) -> str | None:
    """Seven digits and the modulus-11 check digit (weights 2 7 6 5 4 3 2 1), if there is one."""
    check = -sum(w * d for w, d in zip((2, 7, 6, 5, 4, 3, 2), digits, strict=True)) % 11
    return "".join(map(str, digits)) + str(check) if check < 10 else None


def _gln(digits: list[int]) -> str:
    """Twelve digits and the GS1 check digit (weights 3 and 1 from the right)."""
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return "".join(map(str, digits)) + str(-total % 10)


_digits = st.integers(min_value=0, max_value=9)
schemathesis.openapi.format(
    "cvr",
    st.builds(
        lambda first, rest: _cvr([first, *rest]), st.integers(1, 9), st.lists(_digits, min_size=6, max_size=6)
    ).filter(lambda cvr: cvr is not None),
)
schemathesis.openapi.format("gln", st.lists(_digits, min_size=12, max_size=12).map(_gln))


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
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
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
            case.call_and_validate(headers=headers)

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
