"""Billing's OpenAPI document states the rules its validators apply (S10, S9): a client built
from the contract sends what the API accepts."""

import re

from services.billing.catalogue import PRODUCTS
from services.billing.documents import PRINTABLE_PATTERN, unprintable
from services.billing.ordering import OPTION_FIELDS, checked_options
from services.billing.schemas import OrderIn


def test_the_printable_pattern_lets_through_exactly_what_an_invoice_can_print() -> None:
    for code in range(0x2400):
        character = chr(code)
        assert (re.fullmatch(PRINTABLE_PATTERN, character) is not None) == (unprintable(character) is None), (
            hex(code)
        )


def test_each_orderable_product_has_one_alternative_naming_the_options_it_takes() -> None:
    alternatives = OrderIn.model_json_schema()["oneOf"]
    for product in (p for p in PRODUCTS if p.orderable):
        [alternative] = [a for a in alternatives if product.code in a["properties"]["product_code"]["enum"]]
        options = alternative["properties"]["options"]
        assert set(options["properties"]) == set(OPTION_FIELDS[product.kind])
        for name in options.get("required", []):
            assert name in OPTION_FIELDS[product.kind]
        if not options.get("required"):
            assert checked_options(product.kind, {}) == {}
