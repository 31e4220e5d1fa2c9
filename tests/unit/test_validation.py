"""CVR numbers, Danish mobile numbers and emails as a person types them (S1, S5.3, S7)."""

from __future__ import annotations

import pytest

from shared.validation import normalise_cvr, normalise_danish_mobile, normalise_email


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("35657193", "35657193"),
        ("37826111", "37826111"),
        ("3565 7193", "35657193"),
        (" 37826111 ", "37826111"),
    ],
)
def test_a_valid_cvr_number_is_normalised_to_its_eight_digits(typed: str, expected: str) -> None:
    """S1, S2: the application and the e-Boks letter are addressed by CVR."""
    assert normalise_cvr(typed) == expected


def test_a_cvr_number_with_a_wrong_check_digit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"check digit \(modulus 11\) does not match"):
        normalise_cvr("35657194")


@pytest.mark.parametrize("typed", ["3565719", "356571930"])
def test_a_cvr_number_of_the_wrong_length_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="exactly 8 digits"):
        normalise_cvr(typed)


@pytest.mark.parametrize("typed", ["3565719A", "ABCDEFGH"])
def test_a_cvr_number_with_letters_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="only digits"):
        normalise_cvr(typed)


def test_each_kind_of_bad_cvr_number_gets_its_own_message() -> None:
    reasons = set()
    for typed in ("35657194", "3565719", "3565719A"):
        with pytest.raises(ValueError) as caught:
            normalise_cvr(typed)
        reasons.add(str(caught.value))

    assert len(reasons) == 3


@pytest.mark.parametrize(
    "typed",
    ["20123456", "20 12 34 56", "+45 20 12 34 56", "+4520123456", "0045 20123456", "(+45) 2012-3456"],
)
def test_a_danish_mobile_number_in_any_usual_spelling_is_normalised_to_e164(typed: str) -> None:
    """S5.3, S7: the login code is sent to this number, so it must be right."""
    assert normalise_danish_mobile(typed) == "+4520123456"


def test_a_swedish_mobile_number_is_refused_as_not_danish() -> None:
    with pytest.raises(ValueError, match="must be a Danish mobile number"):
        normalise_danish_mobile("+46 70 123 45 67")


@pytest.mark.parametrize("typed", ["2012345", "+45 2012 345"])
def test_a_too_short_number_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="not a valid Danish phone number"):
        normalise_danish_mobile(typed)


def test_text_that_is_not_a_phone_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_danish_mobile("call me")


def test_a_danish_freephone_number_is_refused_as_unable_to_receive_sms() -> None:
    with pytest.raises(ValueError, match="mobile number that can receive SMS"):
        normalise_danish_mobile("80 12 34 56")


def test_an_email_address_has_its_domain_lower_cased_and_its_local_part_kept() -> None:
    """S5.3, S6: the new user's email must be right."""
    assert normalise_email("Anne.Admin@Example.DK") == "Anne.Admin@example.dk"


@pytest.mark.parametrize("typed", ["anne", "anne@@example.dk", "anne@example", "anne admin@example.dk", ""])
def test_a_malformed_email_address_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalise_email(typed)
