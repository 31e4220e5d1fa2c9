"""What the outage tests share: applications submitted in phases around a fault, and the check
that every one of them ended in exactly one letter."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import bindparam, text

from services.suite import Suite
from shared.db import Database
from tests.support.flows import application_body, read_letter
from tests.support.waiting import wait_until


@dataclass
class Submissions:
    """Applications submitted from a thread of their own, one phase at a time: a phase starts
    when the test says so (`start`), and every answer is kept with the phase it belongs to."""

    suite: Suite
    phases: dict[str, list[str]]
    concurrency: int = 4
    # Answers other than 202 that a phase accepts and retries (403: a customer not yet learned).
    retry_statuses: frozenset[int] = frozenset({403})
    accepted: dict[str, str] = field(default_factory=dict)  # cvr -> application id
    answers: dict[str, Counter[int]] = field(default_factory=dict)  # phase -> status -> count
    failures: list[BaseException] = field(default_factory=list)
    _go: dict[str, threading.Event] = field(default_factory=dict)
    _done: dict[str, threading.Event] = field(default_factory=dict)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        for phase in self.phases:
            self._go[phase] = threading.Event()
            self._done[phase] = threading.Event()
            self.answers[phase] = Counter()

    def begin(self) -> None:
        self._thread = threading.Thread(target=self._run, name="submissions", daemon=True)
        self._thread.start()

    def start(self, phase: str) -> None:
        self._go[phase].set()

    def done(self, phase: str) -> bool:
        return self._done[phase].is_set()

    def accepted_in(self, phase: str) -> int:
        return self.answers[phase][202]

    def join(self, timeout: float) -> None:
        for event in self._go.values():
            event.set()  # a phase the test never started runs now, so the thread ends
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the submissions did not finish"
        assert not self.failures, self.failures

    def _run(self) -> None:
        try:
            asyncio.run(self._all())
        except BaseException as exc:  # reported by join()
            self.failures.append(exc)

    async def _all(self) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.suite.url("onboarding"), timeout=60) as client:
            for phase, cvrs in self.phases.items():
                while not self._go[phase].is_set():
                    await asyncio.to_thread(self._go[phase].wait, 0.5)
                await asyncio.gather(*(self._one(client, limit, phase, cvr) for cvr in cvrs))
                self._done[phase].set()

    async def _one(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, phase: str, cvr: str) -> None:
        async with limit:
            for _ in range(600):
                response = await client.post("/v1/applications", json=application_body(cvr))
                self.answers[phase][response.status_code] += 1
                if response.status_code == 202:
                    self.accepted[cvr] = response.json()["id"]
                    return
                assert response.status_code in self.retry_statuses, (phase, response.status_code, response.text)
                retry_after = float(response.headers.get("retry-after", "0.1"))
                await asyncio.sleep(min(retry_after, 1.0))
            raise AssertionError(f"the application of CVR {cvr} was never accepted")


def count_rows(suite: Suite, service: str, sql: str, **params: object) -> int:
    """A count from a service's own database, read the way the service reads it."""

    async def count() -> int:
        db = Database(suite.database_url(service))
        try:
            async with db.reading() as session:
                statement = text(sql)
                for name, value in params.items():
                    if isinstance(value, list | tuple):
                        statement = statement.bindparams(bindparam(name, expanding=True))
                return int(await session.scalar(statement, params) or 0)
        finally:
            await db.dispose()

    return asyncio.run(count())


def wait_for_known_customers(suite: Suite, cvrs: list[str], *, deadline_s: float = 120) -> None:
    """Onboarding has learned every one of `cvrs` (billing announces them at its start)."""
    wait_until(
        lambda: count_rows(suite, "onboarding", "SELECT count(*) FROM known_customers WHERE cvr IN :cvrs", cvrs=cvrs)
        == len(cvrs),
        deadline_s=deadline_s,
        what=f"onboarding to learn {len(cvrs)} customers",
        poll_s=0.5,
    )


def all_letters(var_dir: Path) -> list[Path]:
    return sorted((var_dir / "eboks").glob("*/*.xml"))


def assert_every_application_sent_once(suite: Suite, ids: dict[str, str], *, deadline_s: float = 240) -> None:
    """Every application reaches credentials_sent, and each company has exactly one letter."""
    cvrs = list(ids)
    wait_until(
        lambda: len(all_letters(suite.config.var_dir)) >= len(cvrs),
        deadline_s=deadline_s,
        what=f"{len(cvrs)} letters",
        poll_s=0.5,
    )

    def all_sent() -> Counter[str] | None:
        with httpx.Client(base_url=suite.url("onboarding"), timeout=10) as client:
            statuses = Counter(client.get(f"/v1/applications/{i}").json()["status"] for i in ids.values())
        return statuses if statuses == Counter({"credentials_sent": len(ids)}) else None

    wait_until(all_sent, deadline_s=120, what="every application to reach credentials_sent", poll_s=1)
    letters = [read_letter(path) for path in all_letters(suite.config.var_dir)]
    per_company = Counter(letter.memo.recipient_cvr for letter in letters)
    assert all(per_company[cvr] == 1 for cvr in cvrs), {c: per_company[c] for c in cvrs if per_company[c] != 1}
    assert len(letters) == len(cvrs), "letters to companies that did not apply"
    assert len({letter.username for letter in letters}) == len(letters)
