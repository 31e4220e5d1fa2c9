"""An outbox relay in a process of its own, as another worker of the service runs one:
`python -m tests.support.relay_process --url URL --bootstrap HOST:PORT --report FILE`.

It relays with the real `KafkaPublisher` and writes how many rows it has sent to `--report`
after each turn that sent some. With `--stall-after N` its broker stops acknowledging after the
first N records of its first batch: it writes `stalled` to the report and waits there, holding
the relay's turn, until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData

from shared.clock import SystemClock
from shared.db import Database
from shared.envelope import KafkaRecord
from shared.kafka import KafkaPublisher
from shared.messaging import MessagingTables, OutboxRelay

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StallingPublisher:
    """Publishes the first `after` records for real, then never returns: the broker has stopped
    acknowledging while this relay holds the turn."""

    publisher: KafkaPublisher
    after: int
    report: Path

    async def publish(self, records: list[KafkaRecord]) -> None:
        await self.publisher.publish(records[: self.after])
        _report(self.report, "stalled")
        await asyncio.Event().wait()


def _report(path: Path, text: str) -> None:
    """Replace the report at once (write beside it, then rename), so it is never read half-written."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


async def relay(url: str, bootstrap: str, batch: int, report: Path, stall_after: int | None) -> None:
    db = Database(url)
    tables = MessagingTables.define(MetaData())
    kafka = KafkaPublisher(bootstrap, SystemClock())
    await kafka.start()
    publisher = kafka if stall_after is None else StallingPublisher(kafka, stall_after, report)
    outbox_relay = OutboxRelay(db, tables, publisher, SystemClock(), batch=batch)
    _report(report, "0")
    sent = 0
    while True:
        done = await outbox_relay.run_once()
        if done:
            sent += done
            _report(report, str(sent))
        await asyncio.sleep(0.02)  # tries for a turn as often as the test's relays (`POLL_S`)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--stall-after", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(relay(args.url, args.bootstrap, args.batch, args.report, args.stall_after))


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    report: Path

    def reported(self) -> str | None:
        """What the relay last reported: rows sent, or `stalled`; None before it is running."""
        try:
            return self.report.read_text() or None
        except FileNotFoundError:
            return None

    def sent(self) -> int:
        text = self.reported()
        return int(text) if text and text.isdigit() else 0

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def relay_process(
    url: str, bootstrap: str, workdir: Path, *, batch: int, stall_after: int | None = None
) -> Iterator[RelayProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "relay.report"
    command = [sys.executable, "-m", "tests.support.relay_process", "--url", url, "--bootstrap", bootstrap]
    command += ["--batch", str(batch), "--report", str(report)]
    if stall_after is not None:
        command += ["--stall-after", str(stall_after)]
    with (workdir / "relay.log").open("ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    running = RelayProcess(process, report)
    try:
        yield running
    finally:
        running.kill()


if __name__ == "__main__":
    main()
