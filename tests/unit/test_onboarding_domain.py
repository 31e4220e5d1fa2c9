"""An application's status only moves forward (S1, S2), whatever order events arrive in."""

from __future__ import annotations

import itertools

import pytest

from services.onboarding.domain import IN_FLIGHT, ApplicationStatus, may_move

S = ApplicationStatus
TERMINAL = (S.credentials_sent, S.rejected)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.received, S.provisioning),
        (S.provisioning, S.credentials_sent),
        (S.received, S.credentials_sent),
        (S.provisioning, S.failed),
        (S.received, S.rejected),
        (S.provisioning, S.rejected),
    ],
)
def test_an_application_may_move_forward(current: ApplicationStatus, new: ApplicationStatus) -> None:
    assert may_move(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.credentials_sent, S.provisioning),
        (S.credentials_sent, S.received),
        (S.provisioning, S.received),
    ],
)
def test_an_application_never_moves_back(current: ApplicationStatus, new: ApplicationStatus) -> None:
    """A late provisioning event must not undo a letter already sent (S2)."""
    assert not may_move(current, new)


def test_a_failed_application_moves_only_to_sent_when_its_letter_arrives_after_all() -> None:
    assert [new for new in S if may_move(S.failed, new)] == [S.credentials_sent]


@pytest.mark.parametrize("terminal", TERMINAL)
def test_a_finished_application_does_not_move_at_all(terminal: ApplicationStatus) -> None:
    """Sent and rejected are final; a new application is needed (S3)."""
    assert [new for new in S if may_move(terminal, new)] == []


@pytest.mark.parametrize("status", list(S))
def test_moving_to_the_same_status_is_not_a_move(status: ApplicationStatus) -> None:
    assert not may_move(status, status)


def test_the_in_flight_statuses_and_failed_are_exactly_those_that_can_still_move() -> None:
    movable = {current for current, new in itertools.product(S, S) if may_move(current, new)}

    assert movable == {*IN_FLIGHT, S.failed}
