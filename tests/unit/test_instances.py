"""Several instances of every part on one host (`adgang run --instances N`, docs/operations.md
"Scaling each part"): their names, ports, markers and data directories never collide."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.cli import build_parser
from services.onboarding.config import OnboardingSettings
from services.registry import SERVICES
from services.suite import MAX_INSTANCES, Suite, SuiteConfig
from shared.settings import process_name
from shared.web import reuse_port_supported, shared_port_socket
from tests.support.ports import free_ports

WORKERS = [name for name, parts in SERVICES.items() if parts.has_worker]


def test_instance_one_keeps_the_plain_names_and_the_others_are_numbered(tmp_path: Path) -> None:
    assert process_name("identity", "worker") == "identity-worker"
    assert process_name("identity", "worker", 3) == "identity-worker.3"
    first = OnboardingSettings(var_dir=tmp_path)
    second = OnboardingSettings(var_dir=tmp_path, instance=2)
    assert first.ready_marker("worker") == tmp_path / "run" / "onboarding-worker.ready"
    assert second.ready_marker("api") == tmp_path / "run" / "onboarding-api.2.ready"


@pytest.mark.parametrize("value", ["0", "-1", "100"])
def test_an_instance_number_outside_1_to_99_is_refused(tmp_path: Path, value: str, monkeypatch) -> None:
    monkeypatch.setenv("ADGANG_ONBOARDING_INSTANCE", value)
    with pytest.raises(ValueError, match="instance"):
        OnboardingSettings(var_dir=tmp_path)


@pytest.mark.parametrize("count", [0, MAX_INSTANCES + 1])
def test_a_suite_of_no_or_too_many_instances_is_refused(tmp_path: Path, count: int) -> None:
    with pytest.raises(ValueError, match=f"between 1 and {MAX_INSTANCES}"):
        SuiteConfig(var_dir=tmp_path, worker_instances=count)
    with pytest.raises(ValueError, match=f"between 1 and {MAX_INSTANCES}"):
        SuiteConfig(var_dir=tmp_path, api_instances=count)


@pytest.mark.parametrize("argument", ["0", "11", "three"])
def test_adgang_run_refuses_a_wrong_instance_count(argument: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--instances", argument])
    assert "--instances" in capsys.readouterr().err


def test_every_instance_has_its_own_number_and_worker_metrics_port_and_the_apis_share_a_port(
    tmp_path: Path,
) -> None:
    suite = Suite(
        SuiteConfig(var_dir=tmp_path, worker_instances=3, api_instances=2, worker_metrics_base_port=9400)
    )
    workers = [suite._service_child(name, "worker", n) for name in WORKERS for n in (1, 2, 3)]  # noqa: SLF001
    assert [w.name for w in workers[:3]] == ["billing-worker", "billing-worker.2", "billing-worker.3"]
    metrics = [w.env[f"{SERVICES[w.service or ''].env_prefix}WORKER_METRICS_PORT"] for w in workers]
    assert len(set(metrics)) == len(workers)
    assert {w.env[f"{SERVICES[w.service or ''].env_prefix}INSTANCE"] for w in workers} == {"1", "2", "3"}

    apis = [suite._service_child("identity", "api", n) for n in (1, 2)]  # noqa: SLF001
    ports = {api.env["ADGANG_IDENTITY_HTTP_PORT"] for api in apis}
    if reuse_port_supported():
        assert ports == {"8002"}
        assert {api.env["ADGANG_IDENTITY_HTTP_REUSE_PORT"] for api in apis} == {"true"}
    else:  # the documented alternative: instance n on the port + 100·(n-1)
        assert ports == {"8002", "8102"}


def test_one_api_process_alone_keeps_its_port_to_itself(tmp_path: Path) -> None:
    suite = Suite(SuiteConfig(var_dir=tmp_path))
    api = suite._service_child("identity", "api", 1)  # noqa: SLF001
    assert api.env["ADGANG_IDENTITY_HTTP_REUSE_PORT"] == "false"
    assert "ADGANG_IDENTITY_WORKER_METRICS_PORT" not in suite._service_child("identity", "worker", 1).env  # noqa: SLF001


@pytest.mark.skipif(not reuse_port_supported(), reason="this system has no SO_REUSEPORT")
def test_instances_bind_one_port_together_but_not_one_held_without_sharing(tmp_path: Path) -> None:
    [port] = free_ports(1)
    settings = OnboardingSettings(var_dir=tmp_path, http_port=port, http_reuse_port=True)
    first, second = shared_port_socket(settings), shared_port_socket(settings)
    try:
        for sock in (first, second):
            sock.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        first.close()
        second.close()

    [taken] = free_ports(1)
    holder = socket.socket()
    holder.bind(("127.0.0.1", taken))
    holder.listen()
    try:
        with pytest.raises(OSError):
            shared_port_socket(settings.model_copy(update={"http_port": taken})).close()
    finally:
        holder.close()
