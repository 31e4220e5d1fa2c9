"""Dead-letter sinks for tests that run a consumer without Kafka: one that keeps what it is
given, one for consumers that must never dead-letter."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.messaging import DeadLetter


@dataclass
class KeptDeadLetters:
    """Keeps every dead letter it is given, in order."""

    sent: list[DeadLetter] = field(default_factory=list)

    async def send(self, letter: DeadLetter) -> None:
        self.sent.append(letter)


class NoDeadLetters:
    """For a consumer that must take everything it is given: a dead letter fails the test."""

    async def send(self, letter: DeadLetter) -> None:
        raise AssertionError(
            f"{letter.consumer} dead-lettered a {letter.record.topic} record ({letter.kind}): {letter.reason}"
        )
