"""`adgang`: run the suite, or one of its parts, and the operator's chores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from services.registry import SERVICES

if TYPE_CHECKING:
    from services.suite import Suite


def _service(name: str) -> str:
    if name not in SERVICES:
        raise argparse.ArgumentTypeError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    return name


# glibc's mallopt parameter: blocks at least this large are mmapped, and unmapped when freed
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def _return_large_blocks_to_the_system() -> None:
    """Keep glibc's threshold for mmapped blocks where it starts. By default glibc raises it
    to the size of the largest block freed (up to 32 MiB), and from then on keeps blocks that
    large in each thread's heap: every thread that hashed a password (argon2id takes 19 MiB,
    S7) or rendered a PDF held on to them, and identity's API grew by 19 MiB per thread under
    parallel logins (~60 MB in the soak). A fixed threshold gives each such block back when it
    is freed. Elsewhere than glibc this does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)  # the C library the process runs on


def _without_numpy() -> None:
    """fpdf2 (billing's PDFs) imports numpy whenever it is installed, to speed up images that
    Adgang's invoices do not have; numpy is installed beside the development tools only
    (matplotlib), where it took ~15 MB of the billing API that renders PDFs. No process of the
    suite uses it: a None in sys.modules makes fpdf2 go on without it, as in production."""
    if "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]


def cmd_api(args: argparse.Namespace) -> int:
    import logging
    import os
    import socket

    import uvicorn
    from uvicorn.main import STARTUP_FAILURE

    from shared.logs import configure_logging
    from shared.web import server_config, shared_port_socket

    _without_numpy()
    _return_large_blocks_to_the_system()
    parts = SERVICES[args.service]
    settings = parts.settings()
    configure_logging(service=args.service, level=settings.log_level, fmt=settings.log_format)
    log = logging.getLogger("adgang.api")
    marker = settings.ready_marker("api")
    marker.unlink(missing_ok=True)
    sockets: list[socket.socket] | None = None
    if settings.http_reuse_port:
        try:
            sockets = [shared_port_socket(settings)]
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.http_host, settings.port, exc)
            return STARTUP_FAILURE

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                # Per process: with a shared port, a request to it may reach any instance.
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(os.getpid()))
                if sockets:
                    log.info(
                        "%s serving http://%s:%d (port shared with the service's other instances)",
                        settings.process_name("api"),
                        settings.http_host,
                        settings.port,
                    )

    server = Server(server_config(settings, parts.create_api()))
    try:
        with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: a second Ctrl-C stops at once
            server.run(sockets=sockets)
    finally:
        marker.unlink(missing_ok=True)
    return 0 if server.started else STARTUP_FAILURE  # e.g. the port is taken


def cmd_worker(args: argparse.Namespace) -> int:
    from shared.logs import install_scrubbing
    from shared.worker import run_worker

    install_scrubbing()
    _without_numpy()
    _return_large_blocks_to_the_system()
    parts = SERVICES[args.service]
    settings = parts.settings()
    app = parts.create_worker()
    run_worker(app, log_level=settings.log_level)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.db import migrate

    for name in args.services or list(SERVICES):
        parts = SERVICES[name]
        migrate(parts.migrations, parts.settings().db_url)
        print(f"{name}: database at head")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from shared.kafka import ensure_topics

    bootstrap = args.bootstrap or SERVICES["billing"].settings().kafka_bootstrap_servers
    created = asyncio.run(ensure_topics(bootstrap, replication_factor=args.replication_factor))
    print(f"topics ready on {bootstrap}; created {len(created)}: {', '.join(created) or 'none'}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from shared.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, log=None)
    broker.start()
    print(f"embedded broker on {broker.bootstrap} (memory only); Ctrl-C stops it")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    broker.stop()
    return 0


def cmd_sinks(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from services.notifier.config import SINK_SMS_PORT, NotifierSettings
    from services.notifier.sinks import run_sinks
    from shared.logs import configure_logging

    settings = NotifierSettings()
    if not settings.development:
        print("the sinks stand in for a mail server and an SMS gateway in development only", file=sys.stderr)
        return 2
    configure_logging(service="sinks", level=settings.log_level, fmt=settings.log_format)
    var_dir = Path(args.var_dir) if args.var_dir else settings.var_dir
    asyncio.run(
        run_sinks(
            root=var_dir / "sinks",
            ready_marker=var_dir / "run" / "sinks.ready",
            host=args.host,
            smtp_port=args.smtp_port or settings.smtp_port,
            sms_port=args.sms_port or urlsplit(settings.sms_url).port or SINK_SMS_PORT,
            token=settings.sms_token.get_secret_value(),
        )
    )
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from shared.asyncapi import render_asyncapi

    text = render_asyncapi()
    target = Path(args.output)
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run `adgang asyncapi`", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from services.billing.demo import DEMO_COMPANIES, NOT_A_CUSTOMER_CVR
    from services.suite import Suite, SuiteConfig

    var_dir = Path(args.var_dir).resolve()
    if not args.keep_data and var_dir.exists():
        # The embedded broker keeps nothing across restarts, so neither do the databases.
        shutil.rmtree(var_dir)
    suite = Suite(
        SuiteConfig(
            var_dir=var_dir,
            log_format="text",
            worker_instances=args.instances,
            api_instances=args.instances,
            worker_metrics_base_port=WORKER_METRICS_BASE_PORT,
        )
    )
    stop = threading.Event()
    print("Starting Adgang: embedded broker, four services and the portal (SQLite under var/) ...", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        suite.start()
    except KeyboardInterrupt:
        print("\nInterrupted while starting; stopping ...", file=sys.stderr)
        suite.stop()
        return 130
    except Exception as exc:
        print(f"Could not start the suite: {exc}", file=sys.stderr)
        suite.stop()
        return 1
    # From here on Ctrl-C (SIGINT) and SIGTERM both ask the loop below to stop the suite.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lines = [
        "",
        "Adgang is running. Open the portal:",
        "",
        f"  portal      {suite.url('portal')}   (the website: apply, activate, log in, users, invoices, orders, telephony)",
        "",
        "The services behind it:",
        f"  onboarding  {suite.url('onboarding')}/docs   (apply: POST /v1/applications)",
        f"  identity    {suite.url('identity')}/docs   (activate: POST /v1/activation)",
        f"  billing     {suite.url('billing')}/docs",
        f"  notifier    {suite.url('notifier')}/docs   (deliveries: GET /v1/deliveries, support staff's token)",
        f"  broker      {suite.config.bootstrap} (embedded, memory only)",
        f"  mail sink   smtp://127.0.0.1:{suite.config.smtp_port} (accepts every mail)",
        f"  SMS sink    http://127.0.0.1:{suite.config.sms_port}/v1/sms (an SMS gateway)",
        "",
        f"Letters land in {var_dir / 'eboks'}/<cvr>/ and at {suite.url('notifier')}/dev/eboks/<cvr>",
        f"Invoices as chosen per account (S10): e-invoices in {var_dir / 'einvoice'}/<oioubl|peppol>/<endpoint>/, "
        f"paper in {var_dir / 'print'}/, PDFs by mail to the sink",
        f"Mail lands in {var_dir / 'sinks' / 'mail'}/<address>/ and at {suite.url('notifier')}/dev/mail/<address>",
        f"SMS land in {var_dir / 'sinks' / 'sms'}/<+45…>/ and at {suite.url('notifier')}/dev/sms/<+45…>",
        f"Logs: {suite.log_dir}/",
        "",
        "Demo companies you can apply for:",
        *[
            f"  {c.cvr}  {c.name}" + (f"  (subsidiary of {c.parent_cvr})" if c.parent_cvr else "")
            for c in DEMO_COMPANIES
        ],
        f"  {NOT_A_CUSTOMER_CVR}  (valid CVR, not a customer: refused with 403)",
        "",
        "Try:",
        f"  curl -s -X POST {suite.url('onboarding')}/v1/applications -H 'content-type: application/json' \\",
        '    -d \'{"cvr":"35657193","company_name":"Nordlys Holding A/S",'
        '"contact":{"name":"Mette Holm","email":"mette@nordlys.example","mobile":"+4520123456"}}\'',
        f"  curl -s {suite.url('notifier')}/dev/eboks/35657193",
        "",
        "Ctrl-C stops everything.",
    ]
    if args.instances > 1:
        lines[-1:-1] = _instances_lines(suite)
    print("\n".join(lines), flush=True)
    while not stop.is_set():
        for name, child in suite.children.items():
            if child.process and child.process.poll() is not None:
                print(f"{name} stopped unexpectedly (exit {child.process.returncode}); see {child.log_path}")
                stop.set()
        stop.wait(1.0)
    print("\nStopping ...", flush=True)
    suite.stop()
    print("Stopped.")
    return 0


# `adgang run`: worker n of the k-th service with a worker serves its metrics on 9400 + 10·k + n - 1.
WORKER_METRICS_BASE_PORT = 9400


def _instances_lines(suite: Suite) -> list[str]:
    config = suite.config
    if suite.shares_api_ports:
        apis = f"{config.api_instances} processes of every API, sharing its port (SO_REUSEPORT)"
    else:
        apis = (
            f"{config.api_instances} processes of every API; without SO_REUSEPORT here, "
            "instance n listens on the port + 100·(n-1)"
        )
    metrics = ", ".join(
        f"{name} {suite.worker_metrics_port(name, 1)}-{suite.worker_metrics_port(name, config.worker_instances)}"
        for name, parts in SERVICES.items()
        if parts.has_worker
    )
    return [
        f"Instances: {apis};",
        f"  {config.worker_instances} processes of every worker, one consumer group per service "
        f"(worker metrics ports: {metrics})",
        f"  Logs per process: {suite.log_dir}/<service>-worker.log, <service>-worker.2.log, … (APIs alike)",
        "",
    ]


def _instances(value: str) -> int:
    from services.suite import MAX_INSTANCES

    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, not {value!r}") from None
    if not 1 <= count <= MAX_INSTANCES:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_INSTANCES}, not {count}")
    return count


def cmd_staff_create(args: argparse.Namespace) -> int:
    """Create a support login (S13); the activation code is shown once, here."""
    from shared.clock import SystemClock
    from shared.db import Database
    from shared.problems import Problem
    from shared.validation import normalise_danish_mobile, normalise_email

    try:
        email = normalise_email(args.email)
        mobile = normalise_danish_mobile(args.mobile)
    except ValueError as exc:
        print(f"adgang staff create: {exc}", file=sys.stderr)
        return 2

    from shared.db import migrate

    parts = SERVICES["identity"]
    migrate(parts.migrations, parts.settings().db_url)  # a no-op on a database that is up to date

    async def create() -> tuple[str, str]:
        from services.identity.support import create_staff

        db = Database(SERVICES["identity"].settings().db_url)
        try:
            async with db.transaction() as session:
                user, code = await create_staff(
                    session,
                    SystemClock(),
                    username=args.username,
                    name=args.name,
                    email=email,
                    mobile=mobile,
                    language=args.language,
                )
            return user.username, code
        finally:
            await db.dispose()

    try:
        username, code = asyncio.run(create())
    except Problem as exc:
        print(f"adgang staff create: {exc.detail}", file=sys.stderr)
        return 1
    print(f"Support login {username} created. Activation code (shown once): {code}")
    print("Activate it with POST /v1/activation on identity, then log in with two factors.")
    return 0


def cmd_billing_issue_invoices(args: argparse.Namespace) -> int:
    """Issue a month's invoices (S8) now, as the worker's monthly run does; idempotent."""
    from services.billing.bootstrap import build
    from services.billing.config import BillingSettings
    from services.billing.invoicing import last_closed_period, local_today, month_start, period_of
    from shared.clock import SystemClock
    from shared.db import migrate

    clock = SystemClock()
    try:
        period = period_of(args.period) if args.period else last_closed_period(clock)
    except ValueError:
        print(f"adgang billing issue-invoices: --period must be YYYY-MM, not {args.period!r}", file=sys.stderr)
        return 2
    if period >= month_start(local_today(clock)):
        print(
            f"adgang billing issue-invoices: {period:%Y-%m} has not ended; only a closed month is invoiced",
            file=sys.stderr,
        )
        return 2
    settings = BillingSettings()
    migrate(SERVICES["billing"].migrations, settings.db_url)

    async def issue() -> tuple[int, int]:
        parts = build(settings, clock=clock)
        try:
            async with parts.db.transaction() as session:
                result = await parts.invoicing.issue(session, period)
            return result.invoices, result.lines
        finally:
            await parts.db.dispose()

    invoices, lines = asyncio.run(issue())
    print(f"Issued {invoices} invoices ({lines} lines) for {period:%Y-%m}.")
    return 0


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap or SERVICES["billing"].settings().kafka_bootstrap_servers)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """What is on a topic's dead-letter topic: where, why, whose; never the value (personal data)."""
    from shared.deadletters import DeadLetterError, list_dead_letters, topic_of

    try:
        topic = topic_of(args.topic)
        letters = asyncio.run(list_dead_letters(_bootstrap(args), topic))
    except DeadLetterError as exc:
        print(f"adgang dlq list: {exc}", file=sys.stderr)
        return 2
    print(f"{topic.dlq}: {len(letters)} dead letter(s)")
    row = "{:<17} {:<16} {:<34} {:<33} {}"
    if letters:
        print(row.format("partition:offset", "kind", "consumer", "at", "type / reason"))
    for letter in letters:
        where = f"{letter.partition}:{letter.offset}"
        what = f"{letter.event_type or '-'} / {letter.reason}"
        print(row.format(where, letter.kind, letter.consumer, letter.at, what))
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """Move dead letters back to their topic after a fix; a second run moves only newer ones."""
    from shared.clock import SystemClock
    from shared.deadletters import DeadLetterError, check_reason_kind, replay, topic_of

    try:
        topic = topic_of(args.topic)
        check_reason_kind(args.reason_kind)
        result = asyncio.run(
            replay(
                _bootstrap(args),
                topic,
                SystemClock(),
                reason_kind=args.reason_kind,
                consumer=args.consumer,
                dry_run=args.dry_run,
            )
        )
    except DeadLetterError as exc:
        print(f"adgang dlq replay: {exc}", file=sys.stderr)
        return 2
    verb = "would move" if args.dry_run else "moved"
    for letter in result.moved:
        print(f"{verb} {letter.where} -> {topic.name} ({letter.kind}, {letter.consumer}, {letter.event_type or '-'})")
    for letter, why in result.skipped:
        print(f"left {letter.where} ({letter.kind}, {letter.consumer}): {why}")
    print(f"{topic.dlq}: {verb} {len(result.moved)}, left {len(result.skipped)} (progress: group {result.group})")
    if args.dry_run:
        print("dry run: nothing published, progress not committed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adgang", description="Adgang: self-service access for business customers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="start the whole suite on the embedded defaults")
    p.add_argument("--var-dir", default="var", help="where databases, letters and logs go (default: var)")
    p.add_argument("--keep-data", action="store_true", help="keep the databases of the last run")
    p.add_argument(
        "--instances",
        type=_instances,
        default=1,
        metavar="N",
        help="processes of every worker and every API (default: 1); a service's APIs share its port",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("api", help="run one service's HTTP API")
    p.add_argument("service", type=_service)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run one service's worker")
    p.add_argument("service", type=_service)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="upgrade databases to the newest schema")
    p.add_argument("services", nargs="*", type=_service)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("topics", help="create every topic and its dead-letter topic")
    p.add_argument("--bootstrap", help="broker address (default: from settings)")
    p.add_argument("--replication-factor", type=int, default=1)
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("dlq", help="dead letters: list them, replay them after a fix")
    dlq = p.add_subparsers(dest="dlq_command", required=True)
    p = dlq.add_parser("list", help="what is on <topic>.dlq: offset, reason kind, reason, consumer, time")
    p.add_argument("topic", help="a topic (e.g. identity.users) or its .dlq")
    p.add_argument("--bootstrap", help="broker address (default: from settings)")
    p.set_defaults(func=cmd_dlq_list)
    p = dlq.add_parser(
        "replay", help="republish dead letters to their topic; a second run moves only newer ones"
    )
    p.add_argument("topic", help="a topic (e.g. identity.users) or its .dlq")
    p.add_argument(
        "--reason-kind", metavar="KIND", help="only this kind (invalid-json, handler-failed, ...: see `dlq list`)"
    )
    p.add_argument("--consumer", help="only those this consumer dead-lettered (e.g. billing:identity.users)")
    p.add_argument("--dry-run", action="store_true", help="show what would move; publish and commit nothing")
    p.add_argument("--bootstrap", help="broker address (default: from settings)")
    p.set_defaults(func=cmd_dlq_replay)

    p = sub.add_parser("broker", help="run the embedded broker alone")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("staff", help="support staff logins")
    staff = p.add_subparsers(dest="staff_command", required=True)
    p = staff.add_parser("create", help="create a support login; prints its activation code once")
    p.add_argument("--username", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--mobile", required=True, help="Danish mobile number; login codes go here")
    p.add_argument(
        "--language", choices=("da", "en"), default="da", help="language of the login's codes and notices"
    )
    p.set_defaults(func=cmd_staff_create)

    p = sub.add_parser("billing", help="billing operations")
    billing = p.add_subparsers(dest="billing_command", required=True)
    p = billing.add_parser("issue-invoices", help="issue a month's invoices now (idempotent)")
    p.add_argument("--period", help="YYYY-MM (default: the newest month that has ended)")
    p.set_defaults(func=cmd_billing_issue_invoices)

    p = sub.add_parser("sinks", help="run the local mail and SMS sinks (development)")
    p.add_argument("--var-dir", help="where mail and SMS are kept, under sinks/ (default: the notifier's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, help="SMTP port (default: the notifier's, 8025)")
    p.add_argument("--sms-port", type=int, help="SMS gateway port (default: the notifier's, 8005)")
    p.set_defaults(func=cmd_sinks)

    p = sub.add_parser("asyncapi", help="write docs/asyncapi.yaml from the event models")
    p.add_argument("--output", default="docs/asyncapi.yaml")
    p.add_argument("--check", action="store_true", help="fail if the file differs from a fresh generation")
    p.set_defaults(func=cmd_asyncapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
