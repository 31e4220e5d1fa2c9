"""`ResetIn.username_or_email` and its published pattern agree on what is a space (S10).

The pattern is read by JSON Schema's engine (ECMA-262), whose `\\s` has U+FEFF (a byte order
mark, which a paste can carry) and lacks U+001C-U+001F and U+0085; Python's `\\s` is the other way
round. Both sides take the union as spaces: around the name they are forgiven (stripped), inside
it they are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.identity.schemas import ResetIn

ONLY_ONE_ENGINE_CALLS_A_SPACE = ["\ufeff", "\x1c", "\x1f", "\x85"]


@pytest.mark.parametrize("space", ONLY_ONE_ENGINE_CALLS_A_SPACE, ids=ascii)
def test_a_space_of_either_engine_around_the_name_is_forgiven(space: str) -> None:
    for typed in (f"{space}support.anne", f"support.anne{space}", f" {space} ida@solsikke.example{space}\n"):
        assert ResetIn(username_or_email=typed).username_or_email == typed.strip(f" \n{space}")


@pytest.mark.parametrize("space", ONLY_ONE_ENGINE_CALLS_A_SPACE, ids=ascii)
def test_a_space_of_either_engine_inside_the_name_is_refused(space: str) -> None:
    for typed in (f"support{space}anne", f"ida{space}@solsikke.example", f"ida@solsikke{space}example"):
        with pytest.raises(ValidationError, match="no spaces or line breaks inside"):
            ResetIn(username_or_email=typed)


def test_the_published_pattern_names_the_spaces_python_and_json_schema_differ_on() -> None:
    pattern = ResetIn.model_json_schema()["properties"]["username_or_email"]["pattern"]
    for space in (r"\ufeff", r"\x1c-\x1f", r"\x85"):
        assert space in pattern, pattern
