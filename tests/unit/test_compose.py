"""docker-compose.yml and the Dockerfile describe a production deployment the code can run.

Compose cannot run here (no Docker engine), so these tests hold the file against the code it
starts: the `adgang` commands, the services' settings and their production rules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr

from services.cli import build_parser
from services.registry import SERVICES, ServiceParts
from shared.sealing import generate_key
from shared.settings import Environment
from shared.tokens import generate_signing_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
CONTAINERS: dict[str, dict[str, Any]] = COMPOSE["services"]
# The containers that run the application image built from this repository.
APP_CONTAINERS = sorted(name for name, spec in CONTAINERS.items() if "build" in spec)
PROCESS_CONTAINERS = [f"{name}-worker" for name, parts in SERVICES.items() if parts.has_worker] + [
    f"{name}-api" for name, parts in SERVICES.items() if parts.has_api
]
API_CONTAINERS = [name for name in PROCESS_CONTAINERS if name.endswith("-api")]
WORKER_CONTAINERS = [name for name in PROCESS_CONTAINERS if name.endswith("-worker")]

REQUIRED_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^:@/]*:(?P<password>.*)@[^@]*$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|SEALING_KEYS|PRIVATE_KEY", re.IGNORECASE)

# What an operator would export; every required variable of the compose file must be here.
OPERATOR_ENVIRONMENT = {
    "POSTGRES_PASSWORD": "a-long-random-password",
    "ADGANG_SEALING_KEYS": f"k2:{generate_key()},k1:{generate_key()}",
    "ADGANG_SEALING_ACTIVE_KEY_ID": "k2",
    "ADGANG_SIGNING_KEYS": f"s1:{generate_signing_key()}",
    "ADGANG_SIGNING_ACTIVE_KEY_ID": "s1",
    "ADGANG_PORTAL_URL": "https://selvbetjening.example.dk",
    "ADGANG_OPERATOR_CVR": "12345678",
    "ADGANG_SMTP_HOST": "smtp.example.dk",
    "ADGANG_EMAIL_FROM": "Adgang Selvbetjening <no-reply@example.dk>",
    "ADGANG_SMS_GATEWAY_URL": "https://sms.example.dk/v1/sms",
    "ADGANG_SMS_GATEWAY_TOKEN": "a-gateway-token",
    "ADGANG_BILLING_DOCUMENT_TOKEN": "a-document-token-of-at-least-32-characters",
    "ADGANG_TRUSTED_PROXIES": "172.18.0.1",
    "ADGANG_METRICS_TOKEN": "a-metrics-token",
}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, as far as this file uses it."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"]
        present = name in env and (env[name] != "" or not op.startswith(":"))
        if op.endswith("?"):
            if not present:
                raise KeyError(f"{name} is required by docker-compose.yml: add it to OPERATOR_ENVIRONMENT")
            return env[name]
        if op.endswith("-"):
            return env[name] if present else arg
        if op.endswith("+"):
            return arg if present else ""
        return env.get(name, "")

    return INTERPOLATION.sub(replace, value)


def environment_of(container: str) -> dict[str, str]:
    environment = CONTAINERS[container].get("environment") or {}
    assert isinstance(environment, dict), f"{container}: write environment as a mapping"
    return {name: str(value) for name, value in environment.items()}


def command_of(container: str) -> argparse.Namespace:
    command = CONTAINERS[container].get("command")
    assert isinstance(command, list), f"{container}: command must be a list (exec form)"
    try:
        return build_parser().parse_args([str(word) for word in command])
    except SystemExit:
        pytest.fail(f"{container}: `adgang {' '.join(map(str, command))}` is not a valid adgang command")


def services_addressed(args: argparse.Namespace) -> set[str]:
    """The services whose settings the command reads."""
    if args.command in ("api", "worker"):
        return {args.service}
    if args.command == "migrate":
        return set(args.services or SERVICES)
    if args.command == "topics":
        return set() if args.bootstrap else {"billing"}
    pytest.fail(f"`adgang {args.command}` is not a command for a production container")


def service_of_variable(name: str) -> tuple[ServiceParts, str] | None:
    for parts in SERVICES.values():
        if name.startswith(parts.env_prefix):
            return parts, name.removeprefix(parts.env_prefix).lower()
    return None


def mount_targets(container: str) -> dict[str, str]:
    """Mounted path -> its kind: `tmpfs`, `volume` (named) or `bind`."""
    spec = CONTAINERS[container]
    targets = {path.split(":")[0]: "tmpfs" for path in spec.get("tmpfs") or []}
    for volume in spec.get("volumes") or []:
        source, target = volume.split(":")[:2]
        targets[target] = "bind" if source.startswith((".", "/")) else "volume"
    return targets


def published_ports(container: str, env: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """(host port or range, container port) as compose publishes them with `env` exported."""
    ports = []
    for port in CONTAINERS[container].get("ports") or []:
        published, _, target = interpolate(str(port), env or OPERATOR_ENVIRONMENT).rpartition(":")
        ports.append((published, int(target)))
    return ports


def replicas(container: str, env: dict[str, str]) -> int:
    deploy = CONTAINERS[container].get("deploy") or {}
    return int(interpolate(str(deploy.get("replicas", 1)), env))


# --- the commands ------------------------------------------------------------------------------


def test_every_service_has_a_worker_container_when_it_has_a_worker_and_an_api_container_when_it_has_an_api() -> (
    None
):
    missing = [name for name in PROCESS_CONTAINERS if name not in CONTAINERS]
    assert not missing, f"docker-compose.yml lacks {missing}"


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_every_app_container_runs_a_real_adgang_command(container: str) -> None:
    args = command_of(container)
    assert args.command in ("api", "worker", "migrate", "topics")
    services_addressed(args)


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_every_api_and_worker_container_runs_its_own_part_of_its_own_service(container: str) -> None:
    service, _, part = container.rpartition("-")
    args = command_of(container)
    assert (args.command, args.service) == (part, service)


def test_every_app_container_runs_the_one_image_built_from_this_repository() -> None:
    images = {(CONTAINERS[name]["image"], json.dumps(CONTAINERS[name]["build"])) for name in APP_CONTAINERS}
    assert len(images) == 1, images
    assert set(PROCESS_CONTAINERS) <= set(APP_CONTAINERS)


# --- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_every_adgang_variable_is_a_setting_of_a_service_the_container_runs(container: str) -> None:
    addressed = services_addressed(command_of(container))
    for name in environment_of(container):
        if not name.startswith("ADGANG_"):
            continue
        found = service_of_variable(name)
        assert found is not None, f"{container}: {name} has no service's prefix"
        parts, field = found
        assert field in parts.settings_type().model_fields, (
            f"{container}: {name} is not a setting of {parts.name} (no field {field!r})"
        )
        assert parts.name in addressed, f"{container}: {name} is for {parts.name}, which it does not run"


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_every_api_and_worker_runs_in_production_on_postgres_and_the_compose_kafka(container: str) -> None:
    service = container.rpartition("-")[0]
    prefix = SERVICES[service].env_prefix
    env = environment_of(container)
    assert env.get(f"{prefix}ENVIRONMENT") == "production"
    url = urlsplit(interpolate(env[f"{prefix}DATABASE_URL"], OPERATOR_ENVIRONMENT))
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "postgresql+asyncpg",
        "postgres",
        5432,
        f"/{service}",
    )
    if SERVICES[service].uses_broker:
        advertised = CONTAINERS["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        brokers = {urlsplit(listener).netloc for listener in advertised.split(",")}
        assert env[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] in brokers


def test_migrations_run_against_every_services_own_postgres_database() -> None:
    migrators = [name for name in APP_CONTAINERS if command_of(name).command == "migrate"]
    assert len(migrators) == 1
    args = command_of(migrators[0])
    assert set(args.services or SERVICES) == set(SERVICES)
    env = environment_of(migrators[0])
    for service, parts in SERVICES.items():
        url = urlsplit(interpolate(env.get(f"{parts.env_prefix}DATABASE_URL", ""), OPERATOR_ENVIRONMENT))
        assert (url.scheme, url.hostname, url.path) == ("postgresql+asyncpg", "postgres", f"/{service}"), (
            f"{migrators[0]} would migrate {service}'s development SQLite database, not PostgreSQL"
        )


def compose_settings(container: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings the container's process reads from its compose environment."""
    for name in [name for name in os.environ if name.startswith("ADGANG_")]:
        monkeypatch.delenv(name)
    for name, value in environment_of(container).items():
        monkeypatch.setenv(name, interpolate(value, OPERATOR_ENVIRONMENT))
    return SERVICES[container.rpartition("-")[0]].settings()


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_every_api_and_worker_container_starts_with_its_compose_settings(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = SERVICES[container.rpartition("-")[0]]
    settings = compose_settings(container, monkeypatch)  # the production validators run here
    assert settings.environment is Environment.production
    if parts.settings_type().uses_sealing:
        assert settings.sealer() is not None
    assert settings.var_dir.is_absolute()


@pytest.mark.parametrize("container", API_CONTAINERS)
def test_every_api_believes_x_forwarded_for_only_from_the_operators_proxy(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = SERVICES[container.rpartition("-")[0]].env_prefix
    assert REQUIRED_INTERPOLATION.fullmatch(environment_of(container)[f"{prefix}TRUSTED_PROXIES"])
    settings = compose_settings(container, monkeypatch)
    assert settings.trust_forwarded_for is True
    assert settings.trusted_proxies == [OPERATOR_ENVIRONMENT["ADGANG_TRUSTED_PROXIES"]]


@pytest.mark.parametrize("container", API_CONTAINERS)
def test_every_api_hides_its_documentation_and_serves_metrics_only_with_the_token(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose_settings(container, monkeypatch)
    assert settings.serves_api_docs is False
    assert settings.metrics_token.get_secret_value() == OPERATOR_ENVIRONMENT["ADGANG_METRICS_TOKEN"]
    prefix = SERVICES[container.rpartition("-")[0]].env_prefix
    monkeypatch.setenv(
        f"{prefix}API_DOCS_ENABLED",
        interpolate(
            environment_of(container)[f"{prefix}API_DOCS_ENABLED"], {"ADGANG_API_DOCS_ENABLED": "true"}
        ),
    )
    assert SERVICES[container.rpartition("-")[0]].settings().serves_api_docs is True


@pytest.mark.parametrize("container", API_CONTAINERS)
def test_every_api_listens_on_all_interfaces_of_its_container(container: str) -> None:
    prefix = SERVICES[container.rpartition("-")[0]].env_prefix
    assert environment_of(container).get(f"{prefix}HTTP_HOST") == "0.0.0.0"  # noqa: S104 - the container's port is published


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_the_var_dir_of_every_api_and_worker_is_a_writable_mount(container: str) -> None:
    prefix = SERVICES[container.rpartition("-")[0]].env_prefix
    var_dir = environment_of(container)[f"{prefix}VAR_DIR"]
    assert var_dir in mount_targets(container)


@pytest.mark.parametrize("container", ["notifier-worker", "notifier-api"])
def test_the_eboks_spool_is_a_named_volume_set_by_eboks_spool_dir(container: str) -> None:
    spool = environment_of(container)["ADGANG_NOTIFIER_EBOKS_SPOOL_DIR"]
    assert mount_targets(container).get(spool) == "volume"
    volume = next(v.split(":")[0] for v in CONTAINERS[container]["volumes"] if v.split(":")[1] == spool)
    assert volume in (COMPOSE.get("volumes") or {})


def test_no_environment_value_is_a_literal_secret() -> None:
    for container, spec in CONTAINERS.items():
        for name, value in (spec.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(name):
                assert REQUIRED_INTERPOLATION.fullmatch(value), (
                    f"{container}: {name} must be a required interpolation like ${{{name}:?…}}"
                )
            if credentials := URL_CREDENTIALS.match(value):
                assert REQUIRED_INTERPOLATION.fullmatch(credentials["password"]), (
                    f"{container}: the password in {name} must be a required interpolation"
                )


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_every_secret_setting_comes_from_a_required_interpolation(container: str) -> None:
    for name, value in environment_of(container).items():
        found = service_of_variable(name)
        if found is None:
            continue
        parts, field = found
        annotation = parts.settings_type().model_fields[field].annotation
        if annotation is SecretStr or SecretStr in get_args(annotation):
            assert REQUIRED_INTERPOLATION.fullmatch(value), f"{container}: {name} is a secret"


def test_no_secret_variable_has_a_default_anywhere_in_the_compose_file() -> None:
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if match["name"] and SECRET_NAME.search(match["name"]):
            assert (match["op"] or "").endswith("?"), f"{match[0]} must be required (`:?`), with no default"


# --- start order and health --------------------------------------------------------------------


def test_every_depends_on_names_a_service_of_this_file_and_a_condition() -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for container, spec in CONTAINERS.items():
        depends_on = spec.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{container}: depends_on must be a mapping with conditions"
        for dependency, how in depends_on.items():
            assert dependency in CONTAINERS, f"{container} depends on unknown {dependency}"
            assert how.get("condition") in conditions, f"{container} -> {dependency} needs a condition"


def test_whoever_depends_on_postgres_or_kafka_waits_until_it_is_healthy() -> None:
    for container, spec in CONTAINERS.items():
        for dependency in ("postgres", "kafka"):
            if dependency in (spec.get("depends_on") or {}):
                assert spec["depends_on"][dependency]["condition"] == "service_healthy", container
    assert "healthcheck" in CONTAINERS["postgres"]
    assert "healthcheck" in CONTAINERS["kafka"]


def test_postgres_is_checked_with_pg_isready() -> None:
    assert "pg_isready" in json.dumps(CONTAINERS["postgres"]["healthcheck"]["test"])


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_apis_and_workers_start_after_the_databases_are_migrated_and_the_topics_exist(container: str) -> None:
    depends_on = CONTAINERS[container]["depends_on"]
    one_shots = {
        name: how for name, how in depends_on.items() if how["condition"] == "service_completed_successfully"
    }
    chores = {command_of(name).command for name in one_shots}
    assert chores == {"migrate", "topics"}, f"{container} waits for {sorted(one_shots)}"
    for name in one_shots:
        assert CONTAINERS[name].get("restart") == "no", f"{name} is a one-shot: restart must be 'no'"
    assert {"postgres", "kafka"} <= set(depends_on)


def test_topics_are_created_on_the_compose_kafka() -> None:
    topics = [name for name in APP_CONTAINERS if command_of(name).command == "topics"]
    assert len(topics) == 1
    advertised = CONTAINERS["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert command_of(topics[0]).bootstrap in {urlsplit(x).netloc for x in advertised.split(",")}
    assert command_of(topics[0]).replication_factor == 1


@pytest.mark.parametrize("container", API_CONTAINERS)
def test_every_api_publishes_and_checks_its_services_default_port(container: str) -> None:
    parts = SERVICES[container.rpartition("-")[0]]
    port = parts.settings_type().default_http_port
    assert f"{parts.env_prefix}HTTP_PORT" not in environment_of(container)
    assert published_ports(container) == [(str(port), port)]
    check = " ".join(CONTAINERS[container]["healthcheck"]["test"])
    assert "urllib" in check
    assert f"http://127.0.0.1:{port}/healthz" in check


@pytest.mark.parametrize("container", PROCESS_CONTAINERS)
def test_every_api_and_worker_runs_one_container_unless_scaled_and_can_be(container: str) -> None:
    """`deploy.replicas` (docs/operations.md "Scaling each part"): one by default, more with
    ADGANG_WORKER_REPLICAS / ADGANG_API_REPLICAS; nothing pins a container to one copy."""
    variable = "ADGANG_API_REPLICAS" if container.endswith("-api") else "ADGANG_WORKER_REPLICAS"
    assert replicas(container, OPERATOR_ENVIRONMENT) == 1
    assert replicas(container, {**OPERATOR_ENVIRONMENT, variable: "3"}) == 3
    spec = CONTAINERS[container]
    assert "container_name" not in spec, "a fixed container name allows one replica only"
    assert "hostname" not in spec
    # Each replica has its own var_dir (a tmpfs): instance 1, its own ready marker.
    assert (
        mount_targets(container)[
            environment_of(container)[f"{SERVICES[container.rpartition('-')[0]].env_prefix}VAR_DIR"]
        ]
        == "tmpfs"
    )
    assert not any(name.endswith("_INSTANCE") for name in environment_of(container))


@pytest.mark.parametrize("container", API_CONTAINERS)
def test_scaled_apis_are_published_on_a_host_port_range_with_a_port_per_replica(container: str) -> None:
    parts = SERVICES[container.rpartition("-")[0]]
    port = parts.settings_type().default_http_port
    scaled = {
        **OPERATOR_ENVIRONMENT,
        "ADGANG_API_REPLICAS": "2",
        f"ADGANG_{parts.name.upper()}_API_HOST_PORTS": f"1{port}-1{port + 1}",
    }
    [(published, target)] = published_ports(container, scaled)
    first, _, last = published.partition("-")
    assert target == port
    assert int(last) - int(first) + 1 == replicas(container, scaled)


def test_the_workers_consumer_groups_can_use_three_workers_a_service() -> None:
    """Every topic a worker consumes has at least as many partitions as the replicas the
    documentation scales to, so that none of three workers waits idle."""
    from shared.events import TOPICS

    assert all(topic.partitions >= 3 for topic in TOPICS)
    assert "ADGANG_WORKER_REPLICAS=3" in COMPOSE_FILE.read_text()


@pytest.mark.parametrize("container", WORKER_CONTAINERS)
def test_every_worker_is_healthy_when_its_own_ready_marker_names_a_live_process(container: str) -> None:
    service = container.rpartition("-")[0]
    var_dir = environment_of(container)[f"{SERVICES[service].env_prefix}VAR_DIR"]
    check = " ".join(CONTAINERS[container]["healthcheck"]["test"])
    assert f"{var_dir}/run/{service}-worker.ready" in check
    assert "os.kill" in check
    assert not published_ports(container), "a worker publishes no port (its metrics are exposed only)"


@pytest.mark.parametrize("container", WORKER_CONTAINERS)
def test_every_worker_serves_metrics_to_the_compose_network_with_the_token(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose_settings(container, monkeypatch)
    assert settings.worker_metrics_port is not None
    assert settings.http_host == "0.0.0.0"  # noqa: S104 - reachable by Prometheus in the network
    assert settings.serves_metrics
    assert settings.metrics_token.get_secret_value() == OPERATOR_ENVIRONMENT["ADGANG_METRICS_TOKEN"]
    assert [str(port) for port in CONTAINERS[container].get("expose") or []] == [
        str(settings.worker_metrics_port)
    ]
    assert not published_ports(container), "a worker's metrics stay inside the compose network"


def test_prometheus_scrapes_every_api_and_worker_of_the_compose_file_with_the_token() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"]
        for dns in job["dns_sd_configs"]:
            scraped |= {(name, int(dns["port"])) for name in dns["names"]}
    expected = set()
    for container in API_CONTAINERS:
        parts = SERVICES[container.rpartition("-")[0]]
        expected.add((container, parts.settings_type().default_http_port))
    for container in WORKER_CONTAINERS:
        expected.add((container, int(CONTAINERS[container]["expose"][0])))
    assert scraped == expected


# --- infrastructure ----------------------------------------------------------------------------


def test_kafka_runs_in_kraft_mode_as_one_node_with_single_replica_internal_topics() -> None:
    kafka = CONTAINERS["kafka"]
    env = {name: str(value) for name, value in kafka["environment"].items()}
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in name for name in env)
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",") == [f"{node_id}@kafka:9093"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://:9093" in env["KAFKA_LISTENERS"].split(",")
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[name] == "1", name
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert mount_targets("kafka").get(env["KAFKA_LOG_DIRS"]) == "volume"


def test_postgres_16_creates_one_database_per_service_at_first_start() -> None:
    postgres = CONTAINERS["postgres"]
    assert str(postgres["image"]).split(":")[1].startswith("16")
    mounts = [v.split(":") for v in postgres["volumes"]]
    scripts = [
        ROOT / source for source, target, *_ in mounts if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert scripts, "no init script is mounted into /docker-entrypoint-initdb.d/"
    created = set()
    for script in scripts:
        text = script.read_text()
        loop = re.search(r"for \w+ in ([\w ]+); do", text)
        created |= set(loop[1].split()) if loop else set()
        created |= set(re.findall(r'CREATE DATABASE "?(\w+)"?', text, re.IGNORECASE))
    assert set(SERVICES) <= created
    assert REQUIRED_INTERPOLATION.fullmatch(str(postgres["environment"]["POSTGRES_PASSWORD"]))


def test_the_operator_environment_in_these_tests_is_exactly_what_compose_requires() -> None:
    required = {
        match["name"]
        for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text())
        if match["name"] and (match["op"] or "").endswith("?")
    }
    assert required == set(OPERATOR_ENVIRONMENT)


# --- the image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_the_image_entrypoint_is_the_adgang_console_script() -> None:
    entrypoints = [rest for keyword, rest in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["adgang"]


def test_the_image_does_not_run_as_root() -> None:
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the final stage has no USER line, so it runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0")
    assert group not in ("root", "0")


def test_the_image_is_python_3_11_slim_with_the_project_installed() -> None:
    instructions = dockerfile_instructions()
    base = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for k, rest in instructions if k == "ARG")))
    images = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: base.get(m[1], m[0]), image) for image in images]
    assert resolved and all(image == "python:3.11-slim" for image in resolved), resolved
    assert any(
        keyword == "RUN" and re.search(r"pip install \.(\s|$)", rest) for keyword, rest in instructions
    )


def test_no_secret_is_baked_into_the_image() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not SECRET_NAME.search(rest), f"{keyword} {rest}"


def test_the_build_context_leaves_out_env_files_virtualenvs_and_git() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert "**" in patterns or {".git", ".venv"} <= set(patterns)
    assert {"**/.env", "**/.env.*"} <= set(patterns)
    assert not any(p.startswith("!") and ".env" in p for p in patterns)
