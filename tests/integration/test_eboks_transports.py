"""Letters reach the company's e-Boks once per messageUUID, however often we try (S2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.notifier.eboks import EboksTransport, HttpTransport, SpoolTransport
from services.notifier.transport_base import DeliveryError, PermanentDeliveryError, TransientDeliveryError

COMPANY_CVR = "87654321"
SERVER_START_DEADLINE_S = 5.0


# --- spool --------------------------------------------------------------------------------


def file_bytes(location: str | Path) -> bytes:
    return Path(location).read_bytes()


def file_identity(location: str) -> tuple[int, int]:
    """Inode and modification time: both change if the file is rewritten or replaced."""
    status = Path(location).stat()
    return status.st_ino, status.st_mtime_ns


def everything_under(directory: Path) -> list[Path]:
    return list(directory.rglob("*"))


async def test_the_spool_writes_one_file_per_letter(tmp_path: Path) -> None:
    spool: EboksTransport = SpoolTransport(tmp_path)
    first, second = uuid4(), uuid4()

    receipt_one = await spool.deliver(recipient_cvr=COMPANY_CVR, message_uuid=first, document=b"<one/>")
    receipt_two = await spool.deliver(recipient_cvr=COMPANY_CVR, message_uuid=second, document=b"<two/>")

    assert not receipt_one.already_delivered and not receipt_two.already_delivered
    assert Path(receipt_one.location) == tmp_path / COMPANY_CVR / f"{first}.xml"
    assert file_bytes(receipt_one.location) == b"<one/>"
    assert file_bytes(receipt_two.location) == b"<two/>"
    assert sorted(os.listdir(tmp_path / COMPANY_CVR)) == sorted([f"{first}.xml", f"{second}.xml"])


async def test_delivering_the_same_letter_again_is_recognised_and_changes_nothing(
    tmp_path: Path,
) -> None:
    spool = SpoolTransport(tmp_path)
    message_uuid = uuid4()
    first = await spool.deliver(recipient_cvr=COMPANY_CVR, message_uuid=message_uuid, document=b"<original/>")
    before = file_identity(first.location)

    again = await spool.deliver(
        recipient_cvr=COMPANY_CVR, message_uuid=message_uuid, document=b"<something else/>"
    )

    assert again.already_delivered
    assert again.location == first.location
    assert file_bytes(first.location) == b"<original/>"
    assert file_identity(first.location) == before
    assert spool.list_letters(COMPANY_CVR) == [Path(first.location)]


async def test_racing_deliveries_of_one_letter_leave_exactly_one_complete_file(
    tmp_path: Path,
) -> None:
    # Two transports on one directory stand in for two notifier processes.
    spools = [SpoolTransport(tmp_path), SpoolTransport(tmp_path)]
    message_uuid = uuid4()
    documents = [f"<letter writer='{n}'>{'x' * 50_000}</letter>".encode() for n in range(20)]

    receipts = await asyncio.gather(
        *(
            spools[n % 2].deliver(recipient_cvr=COMPANY_CVR, message_uuid=message_uuid, document=documents[n])
            for n in range(20)
        )
    )

    winners = [n for n, receipt in enumerate(receipts) if not receipt.already_delivered]
    assert len(winners) == 1
    assert os.listdir(tmp_path / COMPANY_CVR) == [f"{message_uuid}.xml"]  # no temp files left
    assert file_bytes(tmp_path / COMPANY_CVR / f"{message_uuid}.xml") == documents[winners[0]]


@pytest.mark.parametrize(
    "cvr", ["../../etc", "1234/678", "..", "12345678/../../x", "١٢٣٤٥٦٧٨", "1234567", ""]
)
async def test_a_cvr_that_could_leave_the_spool_directory_is_refused(tmp_path: Path, cvr: str) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolTransport(spool_dir)

    with pytest.raises(PermanentDeliveryError, match="8 digits"):
        await spool.deliver(recipient_cvr=cvr, message_uuid=uuid4(), document=b"<x/>")
    with pytest.raises(ValueError, match="8 digits"):
        spool.list_letters(cvr)

    assert everything_under(tmp_path) == []


async def test_letters_are_listed_oldest_first_and_only_for_their_company(tmp_path: Path) -> None:
    spool = SpoolTransport(tmp_path)
    older, newer = uuid4(), uuid4()
    await spool.deliver(recipient_cvr=COMPANY_CVR, message_uuid=newer, document=b"<n/>")
    await spool.deliver(recipient_cvr=COMPANY_CVR, message_uuid=older, document=b"<o/>")
    await spool.deliver(recipient_cvr="11111111", message_uuid=uuid4(), document=b"<other/>")
    os.utime(tmp_path / COMPANY_CVR / f"{older}.xml", ns=(1_000_000_000, 1_000_000_000))

    assert spool.list_letters(COMPANY_CVR) == [
        tmp_path / COMPANY_CVR / f"{older}.xml",
        tmp_path / COMPANY_CVR / f"{newer}.xml",
    ]
    assert spool.list_letters("22222222") == []


# --- a real HTTP server standing in for the contracted e-Boks endpoint ----------------------


@dataclass
class ReceivedLetter:
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeEboksEndpoint:
    """An ASGI app that answers with scripted statuses, then 201, and records every request."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[ReceivedLetter] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_with(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.script.extend(s if isinstance(s, tuple) else (s, {}) for s in statuses)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self.lock:
            self.received.append(ReceivedLetter(headers=headers, body=body))
            status, extra = self.script.pop(0) if self.script else (201, {})
        reply = f"status {status}".encode()
        response_headers = [(b"content-type", b"text/plain")]
        response_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": reply})


@dataclass
class RunningServer:
    url: str
    endpoint: FakeEboksEndpoint


def start_server(
    endpoint: FakeEboksEndpoint, scheme: str = "http", **ssl_options: Any
) -> Iterator[RunningServer]:
    """Run uvicorn on a free 127.0.0.1 port in a thread; yield once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(endpoint, lifespan="off", log_level="critical", access_log=False, **ssl_options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started and port_accepts(port), "server accepts connections")
    try:
        yield RunningServer(url=f"{scheme}://127.0.0.1:{port}/letters", endpoint=endpoint)
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_DEADLINE_S)
        sock.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SERVER_START_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting until {what}")
        time.sleep(0.01)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def eboks() -> Iterator[RunningServer]:
    yield from start_server(FakeEboksEndpoint())


class RecordedSleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_a_letter_is_posted_as_memo_xml_with_its_uuid_and_recipient(
    eboks: RunningServer,
) -> None:
    message_uuid = uuid4()
    async with HttpTransport(url=eboks.url) as transport:
        receipt = await transport.deliver(
            recipient_cvr=COMPANY_CVR, message_uuid=message_uuid, document=b"<memo:Message/>"
        )

    assert receipt.message_uuid == message_uuid and not receipt.already_delivered
    [letter] = eboks.endpoint.received
    assert letter.body == b"<memo:Message/>"
    assert letter.headers["content-type"] == "application/xml"
    assert letter.headers["x-message-uuid"] == str(message_uuid)
    assert letter.headers["x-recipient-cvr"] == COMPANY_CVR


async def test_a_letter_the_endpoint_already_has_counts_as_delivered(
    eboks: RunningServer,
) -> None:
    eboks.endpoint.answer_with(409)
    async with HttpTransport(url=eboks.url) as transport:
        receipt = await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert receipt.already_delivered
    assert len(eboks.endpoint.received) == 1


async def test_two_unavailable_answers_are_retried_with_growing_waits(
    eboks: RunningServer,
) -> None:
    eboks.endpoint.answer_with(503, 503)
    sleeps = RecordedSleeps()
    async with HttpTransport(url=eboks.url, sleep=sleeps) as transport:
        receipt = await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert not receipt.already_delivered
    assert len(eboks.endpoint.received) == 3
    assert len(sleeps.delays) == 2
    assert 0 < sleeps.delays[0] < sleeps.delays[1]


async def test_a_retry_after_from_the_endpoint_is_honoured_up_to_the_cap(
    eboks: RunningServer,
) -> None:
    eboks.endpoint.answer_with((429, {"retry-after": "3"}), (503, {"retry-after": "3600"}))
    sleeps = RecordedSleeps()
    async with HttpTransport(url=eboks.url, sleep=sleeps, backoff_max=8.0) as transport:
        await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert sleeps.delays == [3.0, 8.0]


async def test_a_refused_letter_fails_permanently_without_retry(eboks: RunningServer) -> None:
    eboks.endpoint.answer_with(400)
    sleeps = RecordedSleeps()
    async with HttpTransport(url=eboks.url, sleep=sleeps) as transport:
        with pytest.raises(PermanentDeliveryError, match="400") as raised:
            await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert raised.value.status_code == 400
    assert "status 400" in str(raised.value)  # the endpoint's own words, for the operator
    assert len(eboks.endpoint.received) == 1
    assert sleeps.delays == []


async def test_an_endpoint_that_stays_unavailable_fails_transiently_after_max_attempts(
    eboks: RunningServer,
) -> None:
    eboks.endpoint.answer_with(*[503] * 10)
    sleeps = RecordedSleeps()
    async with HttpTransport(
        url=eboks.url, sleep=sleeps, max_attempts=4, backoff_base=0.5, backoff_max=0.8
    ) as transport:
        with pytest.raises(TransientDeliveryError, match="after 4 attempts"):
            await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert len(eboks.endpoint.received) == 4
    assert len(sleeps.delays) == 3
    assert all(0 < delay <= 0.8 for delay in sleeps.delays)


async def test_an_endpoint_nobody_listens_on_fails_transiently() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sleeps = RecordedSleeps()
    async with HttpTransport(
        url=f"http://127.0.0.1:{closed_port}/letters", sleep=sleeps, max_attempts=2
    ) as transport:
        with pytest.raises(TransientDeliveryError, match="ConnectError"):
            await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert len(sleeps.delays) == 1


# --- mutual TLS -----------------------------------------------------------------------------


@dataclass
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def issue(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
    san: x509.GeneralName | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_public_key = issuer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), False)
    )
    if usage is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    def pem(cert: x509.Certificate, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(subject="Test e-Boks CA", key=ca_key, issuer=None, issuer_key=ca_key, usage=None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue(
        subject="127.0.0.1",
        key=server_key,
        issuer=ca,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue(
        subject="Adgang notifier",
        key=client_key,
        issuer=ca,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return Pki(
        ca_cert=pem(ca, "ca.pem"),
        server_cert=pem(server, "server.pem"),
        server_key=write_key(server_key, tmp_path / "server.key"),
        client_cert=pem(client, "client.pem"),
        client_key=write_key(client_key, tmp_path / "client.key"),
    )


@pytest.fixture
def mtls_eboks(pki: Pki) -> Iterator[RunningServer]:
    yield from start_server(
        FakeEboksEndpoint(),
        scheme="https",
        ssl_certfile=str(pki.server_cert),
        ssl_keyfile=str(pki.server_key),
        ssl_ca_certs=str(pki.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )


async def test_a_letter_is_delivered_over_mutual_tls_with_the_client_certificate(
    mtls_eboks: RunningServer, pki: Pki
) -> None:
    message_uuid: UUID = uuid4()
    async with HttpTransport(
        url=mtls_eboks.url,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        ca_bundle=pki.ca_cert,
    ) as transport:
        receipt = await transport.deliver(
            recipient_cvr=COMPANY_CVR, message_uuid=message_uuid, document=b"<x/>"
        )

    assert not receipt.already_delivered
    assert [letter.headers["x-message-uuid"] for letter in mtls_eboks.endpoint.received] == [
        str(message_uuid)
    ]


async def test_without_the_client_certificate_the_endpoint_gets_no_letter(
    mtls_eboks: RunningServer, pki: Pki
) -> None:
    sleeps = RecordedSleeps()
    async with HttpTransport(
        url=mtls_eboks.url, ca_bundle=pki.ca_cert, max_attempts=2, sleep=sleeps
    ) as transport:
        with pytest.raises(DeliveryError):
            await transport.deliver(recipient_cvr=COMPANY_CVR, message_uuid=uuid4(), document=b"<x/>")

    assert mtls_eboks.endpoint.received == []


def test_a_client_certificate_without_its_key_is_a_configuration_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match="together"):
        HttpTransport(url="https://127.0.0.1/letters", client_cert=pki.client_cert)
