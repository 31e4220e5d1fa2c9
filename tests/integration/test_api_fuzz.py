"""Whatever a client sends, the public APIs answer with their contract, never with a 500
(property-based, generated from each API's own OpenAPI document).

Every test run generates `ADGANG_FUZZ_EXAMPLES` requests per operation (25, new ones each run);
`make fuzz` runs 300 per operation, the long search that would slow every test run.

Besides answering without a 500 and as documented, each API accepts every request its schema
allows (schemathesis's `positive_data_acceptance`): the schema states the rules the API enforces
(`shared.validation`). The two formats whose check digit no pattern can state, `cvr` and
`gln`, are generated here as their validators define them."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
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
#
# Identity's activation (`POST /v1/activation`) accepts only a code that was issued, and a new
# password that passes the policy's rules of content (not a common password, not the username,
# enough different characters): rules of state and of a word list, which no schema can state.
# A request the schema allows may therefore be refused there, with 400 or 422 and nothing else.
ACTIVATION_REFUSALS = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"allow-x00": False},
        "operations": [
            {
                "include-name": "POST /v1/activation",
                "checks": {"positive_data_acceptance": {"expected-statuses": ACTIVATION_REFUSALS}},
            }
        ],
    }
)


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


def _schema(app: object, hooks: Callable[[Any], None] | None = None) -> Any:
    """The app's OpenAPI document as schemathesis reads it, with the test's `hooks`."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    if hooks is not None:
        hooks(schema)
    return schema


def _sent_as_generated(case: Any) -> bool:
    """Whether the API reads each path value of a request the schema allows as the schema allows it.

    Schemathesis percent-decodes a generated path value before it encodes it (it takes `%0D` for
    an escape already made): the mailbox `V0l70%0DmS@k`, which the schema allows (`%` is atext),
    is sent as `V0l70%0DmS%40k`, which the API reads as `V0l70<CR>mS@k` and refuses (422). Such
    a request is not the one generated, so it proves nothing about the API."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    for parameter in case.operation.path_parameters:
        value = case.path_parameters.get(parameter.name)
        pattern = parameter.definition.get("schema", {}).get("pattern")
        if isinstance(value, str) and pattern and not re.fullmatch(pattern, unquote(value)):
            return False
    return True


def _call_and_validate(case: Any, headers: dict[str, str] | None = None) -> None:
    assume(_sent_as_generated(case))
    case.call_and_validate(headers=headers)


def fuzz(
    app: object,
    headers: dict[str, str] | None = None,
    *,
    hooks: Callable[[Any], None] | None = None,
) -> list[str]:
    """Every operation of the app's OpenAPI document, many generated requests each. `hooks`
    registers the schema's own hooks: the few rules of state that no schema can state."""
    schema = _schema(app, hooks)
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
            _call_and_validate(case, headers)

        run()
        exercised.append(operation.label)
    return exercised


def test_onboarding_answers_every_generated_request_by_its_contract(database_factory) -> None:
    assert "POST /v1/applications" in fuzz(_onboarding(database_factory))


def test_identity_answers_every_generated_request_by_its_contract(database_factory) -> None:
    assert "POST /v1/activation" in fuzz(_identity(database_factory))


def test_notifier_answers_every_generated_request_by_its_contract(database_factory, tmp_path) -> None:
    assert "GET /dev/eboks/{cvr}" in fuzz(_notifier(database_factory, tmp_path))


def _notifier(database_factory, tmp_path) -> object:
    from services.notifier.api import create_api as notifier_api
    from services.notifier.config import NotifierSettings

    url = database_factory("notifier")
    migrate(SERVICES["notifier"].migrations, url)
    return notifier_api(NotifierSettings(database_url=url, var_dir=tmp_path))


def test_a_path_value_the_api_would_read_otherwise_than_generated_is_not_sent(
    database_factory, tmp_path
) -> None:
    """The generated mailbox `V0l70%0DmS@k` reaches schemathesis's request as `V0l70%0DmS%40k`
    (what it sent when the notifier's fuzz failed once): that request is left out, while a
    mailbox with a `%` that survives the encoding is sent and accepted."""
    mangled, kept = "V0l70%0DmS%40k", "a%25b%40example.dk"

    def pinned_mailboxes(schema: Any) -> None:
        @schema.hook
        def flatmap_path_parameters(ctx: Any, path_parameters: Any) -> Any:
            return st.sampled_from([mangled, kept]).map(lambda address: {**path_parameters, "address": address})

    operation = _schema(_notifier(database_factory, tmp_path), pinned_mailboxes)["/dev/mail/{address}"]["GET"]
    sent = []

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(
        max_examples=10, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def run(case) -> None:
        _call_and_validate(case)  # positive_data_acceptance: a schema-valid request is accepted
        sent.append(case.path_parameters["address"])

    run()
    assert set(sent) == {kept}


def test_digits_in_a_path_are_the_ascii_digits_the_schema_states(database_factory, tmp_path) -> None:
    """JSON Schema reads `\\d` as 0-9 (ECMA-262), the server's regex engine as any Unicode digit:
    the patterns say [0-9], so a CVR in Arabic-Indic digits is refused by its contract (422), not
    taken in and failed on later (it was a 500)."""
    schema = _schema(_notifier(database_factory, tmp_path))
    operation = schema["/dev/eboks/{cvr}"]["GET"]
    arabic_indic = "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668"  # 12345678
    assert operation.Case(path_parameters={"cvr": quote(arabic_indic, safe="")}).call().status_code == 422
    assert operation.Case(path_parameters={"cvr": "12345678"}).call().status_code == 200


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
    granted_account = "10000021"
    mobile_line = asyncio.run(_mobile_line_of(url, granted_account))

    def rules_of_state(schema: Any) -> None:
        @schema.hook
        def filter_query(ctx: Any, query: Any) -> bool:
            # A cursor is one a page gave out, and a period starts before it ends.
            if not isinstance(query, dict):
                return True
            if "cursor" in query and ctx.operation.path in ("/v1/invoices", "/v1/usage", "/v1/orders"):
                return False
            start, end = query.get("from"), query.get("to")
            return not (isinstance(start, str) and isinstance(end, str) and start > end)

        @schema.hook
        def map_body(ctx: Any, body: Any) -> Any:
            # An order goes on an account within the caller's grants; an add-on onto its mobile line.
            if ctx.operation.label == "POST /v1/orders" and isinstance(body, dict):
                if re.fullmatch(r"\d{6,12}", str(body.get("account_number"))):
                    body["account_number"] = granted_account
                options = body.get("options")
                if isinstance(options, dict) and isinstance(options.get("attach_to"), str):
                    options["attach_to"] = mobile_line
            return body

        @schema.hook
        def map_headers(ctx: Any, headers: Any) -> Any:
            # A key reused for another order is refused (422), as it should be: a new key each.
            if isinstance(headers, dict) and isinstance(headers.get("Idempotency-Key"), str):
                headers["Idempotency-Key"] = str(uuid.uuid4())
            return headers

    exercised = fuzz(app, headers=tokens.group_admin().headers, hooks=rules_of_state)
    assert {
        "GET /v1/invoices",
        "POST /v1/orders",
        "PATCH /v1/subscriptions/{subscription_id}/settings",
    } <= set(exercised)


async def _mobile_line_of(url: str, account: str) -> str:
    """An active mobile subscription of the account: what an add-on is attached to."""
    from sqlalchemy import select

    from services.billing.models import Subscription
    from shared.db import Database

    db = Database(url)
    try:
        async with db.reading() as session:
            found = await session.scalar(
                select(Subscription.id).where(
                    Subscription.account_number == account,
                    Subscription.product_code.startswith("MOBIL"),
                    Subscription.status == "active",
                )
            )
    finally:
        await db.dispose()
    assert found is not None, f"the seeded account {account} has no mobile line"
    return str(found)
