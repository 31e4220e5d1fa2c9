"""Identity's rules: activation codes (S2), usernames (S2, S4) and the password policy."""

from __future__ import annotations

import re

import pytest

from services.identity.domain import (
    CODE_ALPHABET,
    CODE_BITS,
    code_matches,
    generate_activation_code,
    hash_code,
    new_username,
    normalise_activation_code,
    normalise_username,
    password_problem,
)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_SHAPE = re.compile(rf"^[{CROCKFORD}]{{4}}(-[{CROCKFORD}]{{4}}){{4}}$")
CODE = "7Q4K-93XZ-ABCD-EFGH-JKMN"
USERNAME = "35657193-abcd"


def test_the_code_alphabet_is_crockford_base32_without_look_alikes() -> None:
    assert CODE_ALPHABET == CROCKFORD
    assert not set("ILOU") & set(CODE_ALPHABET)


def test_an_activation_code_carries_at_least_80_bits_of_randomness() -> None:
    """S2: the code in the letter is the only thing standing between a stranger and the login."""
    assert CODE_BITS >= 80


def test_a_generated_activation_code_has_five_groups_of_four_crockford_characters() -> None:
    for _ in range(200):
        assert CODE_SHAPE.match(generate_activation_code())


def test_generated_activation_codes_are_distinct_and_use_the_whole_alphabet() -> None:
    codes = [generate_activation_code() for _ in range(1000)]

    assert len(set(codes)) == len(codes)
    assert set("".join(codes).replace("-", "")) == set(CROCKFORD)


def test_a_generated_code_is_already_in_its_normalised_form() -> None:
    code = generate_activation_code()

    assert normalise_activation_code(code) == code


@pytest.mark.parametrize(
    "typed",
    [
        "7q4k-93xz-abcd-efgh-jkmn",
        "7Q4K 93XZ ABCD EFGH JKMN",
        "7Q4K93XZABCDEFGHJKMN",
        "  7q4k-93xz - abcd-efgh-jkmn\n",
    ],
)
def test_a_typed_activation_code_forgives_case_spaces_and_dashes(typed: str) -> None:
    assert normalise_activation_code(typed) == CODE


def test_the_look_alikes_o_i_and_l_are_read_as_zero_and_one() -> None:
    assert normalise_activation_code("OOOO-IIII-LLLL-oooo-iill") == "0000-1111-1111-0000-1111"


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("7Q4K-93XZ-ABCD-EFGH-JKM", id="one short"),
        pytest.param("7Q4K-93XZ-ABCD-EFGH-JKMN-P", id="one long"),
        pytest.param("", id="empty"),
        pytest.param("7Q4K-93XZ-ABCD-EFGH-JKMU", id="U is not Crockford"),
        pytest.param("7Q4K-93XZ-ABCD-EFGH-JKM*", id="punctuation"),
        pytest.param("7Q4K-93XZ-ABCD-EFGH-JKMÆ", id="Danish letter"),
    ],
)
def test_a_typed_activation_code_of_the_wrong_length_or_with_foreign_characters_is_refused(
    typed: str,
) -> None:
    with pytest.raises(ValueError, match="XXXX-XXXX-XXXX-XXXX-XXXX"):
        normalise_activation_code(typed)


def test_the_hash_of_a_code_is_stable_and_ignores_how_it_was_typed() -> None:
    assert hash_code(CODE) == hash_code(CODE)
    assert hash_code(CODE) == hash_code("7q4k 93xz abcd efgh jkmn")
    assert re.fullmatch(r"[0-9a-f]{64}", hash_code(CODE))
    assert CODE not in hash_code(CODE)


def test_only_the_right_code_matches_its_hash() -> None:
    stored = hash_code(CODE)

    assert code_matches(CODE, stored)
    assert code_matches(CODE.lower(), stored)
    assert not code_matches("7Q4K-93XZ-ABCD-EFGH-JKMP", stored)
    assert not code_matches(generate_activation_code(), stored)


def test_different_codes_have_different_hashes() -> None:
    codes = {generate_activation_code() for _ in range(100)}

    assert len({hash_code(code) for code in codes}) == len(codes)


def test_a_password_shorter_than_the_minimum_is_refused() -> None:
    assert password_problem("Xk9!mQ2#vL7", username=USERNAME, min_length=12) == (
        "must be at least 12 characters long"
    )


def test_a_password_of_exactly_the_minimum_length_is_accepted() -> None:
    assert password_problem("Xk9!mQ2#vL7$", username=USERNAME, min_length=12) is None


def test_a_password_longer_than_256_characters_is_refused() -> None:
    assert password_problem("Xk9!mQ2#" * 33, username=USERNAME, min_length=12) == (
        "must be at most 256 characters long"
    )


@pytest.mark.parametrize("password", ["password1234", "PASSWORD1234", "Password1234"])
def test_a_common_password_is_refused_whatever_its_case(password: str) -> None:
    assert password_problem(password, username=USERNAME, min_length=12) == (
        "is one of the most common passwords; choose another"
    )


def test_a_password_containing_the_username_is_refused() -> None:
    assert password_problem("my login is 35657193-ABCD!", username=USERNAME, min_length=12) == (
        "must not contain the username"
    )


def test_a_password_of_one_repeated_character_is_refused() -> None:
    assert password_problem("zzzzzzzzzzzzzzzz", username=USERNAME, min_length=12) == (
        "must not repeat so few characters"
    )


def test_a_good_passphrase_is_accepted() -> None:
    assert password_problem("korrekt hest batteri hæfteklamme", username=USERNAME, min_length=12) is None


def test_a_new_username_starts_with_the_companys_cvr() -> None:
    """S2: the username in the letter is tied to the company it was sent to."""
    username = new_username("35657193")

    assert re.fullmatch(r"35657193-[a-z0-9]{4}", username)
    assert username == normalise_username(username)


def test_new_usernames_for_the_same_company_differ() -> None:
    assert len({new_username("35657193") for _ in range(50)}) > 1


def test_a_typed_username_is_trimmed_and_lower_cased() -> None:
    assert normalise_username("  35657193-ABCD ") == USERNAME
