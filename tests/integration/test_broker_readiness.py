"""Readiness sees a broker that stops answering (issue 13, outages): an open port is not an
answering broker. A stopped (SIGSTOP) or hung broker's port still completes the TCP handshake
in the kernel, so only a Kafka request answered in time counts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.broker import EmbeddedBroker
from shared.kafka import broker_reachable
from tests.support.ports import free_ports
from tests.support.waiting import wait_until


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that completes every TCP handshake (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_port_that_accepts_but_never_answers_is_not_a_reachable_broker(silent_port: int) -> None:
    # Waits are bounded by the check's own wait, not by the silent peer.
    started = time.monotonic()
    assert await broker_reachable(f"127.0.0.1:{silent_port}", wait_s=0.5) is False
    assert time.monotonic() - started < 5


async def test_a_closed_port_or_a_malformed_address_is_not_reachable() -> None:
    (closed,) = free_ports(1)
    assert await broker_reachable(f"127.0.0.1:{closed}", wait_s=0.5) is False
    assert await broker_reachable("127.0.0.1:not-a-port", wait_s=0.5) is False


def stopped(pid: int) -> bool:
    """Whether every thread of `pid` has stopped (SIGSTOP reaches each thread on its own)."""
    states = [
        Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for task in os.listdir(f"/proc/{pid}/task")
    ]
    return all(state == "T" for state in states)


@pytest.fixture
def broker(tmp_path) -> Iterator[EmbeddedBroker]:
    (port,) = free_ports(1)
    with (tmp_path / "broker.log").open("ab") as log:
        broker = EmbeddedBroker(port=port, log=log)
        broker.start()
        try:
            yield broker
        finally:
            assert broker.process is not None
            os.kill(broker.process.pid, signal.SIGCONT)  # never leave it stopped
            broker.stop()


async def test_a_stopped_broker_is_reported_at_once_and_found_again_when_it_continues(
    broker: EmbeddedBroker,
) -> None:
    assert broker.process is not None
    assert await broker_reachable(broker.bootstrap, wait_s=2.0) is True

    os.kill(broker.process.pid, signal.SIGSTOP)
    wait_until(lambda: stopped(broker.process.pid), deadline_s=5, what="the broker's threads to stop", poll_s=0.01)
    # Its port still completes a handshake: the old check (a TCP connect) called this reachable.
    with socket.create_connection((broker.host, broker.port), timeout=2.0):
        pass
    assert await broker_reachable(broker.bootstrap, wait_s=1.0) is False

    os.kill(broker.process.pid, signal.SIGCONT)
    assert await broker_reachable(broker.bootstrap, wait_s=5.0) is True


async def test_one_answering_address_of_several_is_enough(broker: EmbeddedBroker, silent_port: int) -> None:
    (closed,) = free_ports(1)
    bootstrap = f"127.0.0.1:{closed},{broker.bootstrap}"
    assert await broker_reachable(bootstrap, wait_s=3.0) is True
    # A silent first address spends the wait: the check stays bounded rather than hanging.
    assert await asyncio.wait_for(broker_reachable(f"127.0.0.1:{silent_port}", wait_s=0.5), 5) is False
