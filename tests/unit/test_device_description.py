"""What a user reads of each of their sessions: the browser or app and its system, from the
user agent it logged in with (services/identity/profile.py, `describe_device`)."""

from __future__ import annotations

import pytest

from services.identity.profile import describe_device


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36",
            "Chrome on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.1 Mobile/15E148 Safari/604.1",
            "Mobile Safari on iOS (iPhone)",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox on Linux"),
    ],
)
def test_a_known_browser_is_named_with_its_system(user_agent: str, shown: str) -> None:
    assert describe_device(user_agent) == shown


def test_an_agent_the_rules_do_not_know_is_shown_as_it_came_and_none_as_unknown() -> None:
    assert describe_device("adgang-app/2.1") == "adgang-app/2.1"
    assert describe_device("x" * 300) == "x" * 60
    assert describe_device(None) == describe_device("") == "unknown"
