"""compose.yaml: valid by the Compose Specification's JSON schema, and true to our own rules for it.

The schema is ``schema/compose-spec.json`` of github.com/compose-spec/compose-spec (commit a08f8d5, 2025-10-28),
vendored with its licence in tests/schemas/. ``docker compose config`` would need Docker; this needs nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

from scripts.kafka.support import DEFAULT_KAFKA_VERSION
from tests.support.containers import KAFKA_BROKER_ENVIRONMENT, KAFKA_IMAGE, POSTGRES_IMAGE, S3_IMAGE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
LONG_RUNNING_RESTARTS = {"always", "unless-stopped", "on-failure"}
APP_IMAGE = "image-pipeline:local"
S3_SETTINGS = {"BLOB_STORE_URL", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, from either of compose's two forms."""
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(entry.split("=", 1) for entry in environment)
    return {name: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in environment.items()}  # fmt: skip


def test_compose_file_is_valid_by_the_compose_specification(
    compose: dict[str, Any], validator: Draft7Validator
) -> None:
    assert _errors(validator, compose) == []


def test_the_schema_check_is_not_vacuous(compose: dict[str, Any], validator: Draft7Validator) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["restart"] = ["unless-stopped"]
    broken["services"]["worker"]["depends_on"] = {"kafka": {"condition": "when_it_feels_like_it"}}
    broken["services"]["kafka"]["helthcheck"] = broken["services"]["kafka"].pop("healthcheck")
    messages = "\n".join(_errors(validator, broken))
    assert "services/api/restart" in messages
    assert "services/worker/depends_on" in messages
    assert "helthcheck" in messages


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":", 1)[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond this machine"


def test_every_long_running_service_restarts_and_reports_health(compose: dict[str, Any]) -> None:
    services = _services(compose)
    one_shot = _one_shot(services)
    assert one_shot == {"migrate"}
    for name, service in services.items():
        restart = str(service.get("restart", "no")).split(":")[0]
        if name in one_shot:  # runs to completion (others wait for that); restarted only if it failed
            assert restart == "on-failure", name
            continue
        assert restart in LONG_RUNNING_RESTARTS, name
        assert "test" in service.get("healthcheck", {}), name


def _one_shot(services: dict[str, Any]) -> set[str]:
    """Services others wait for to have completed, rather than to be healthy."""
    return {
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, condition in service["depends_on"].items()
        if condition.get("condition") == "service_completed_successfully"
    }


def test_kafka_keeps_its_log_on_its_volume(compose: dict[str, Any]) -> None:
    kafka = _services(compose)["kafka"]
    named_volumes = set(compose.get("volumes", {}))
    mounts = [
        PurePosixPath(target)
        for source, target in (str(volume).split(":")[:2] for volume in kafka["volumes"])
        if source in named_volumes
    ]
    environment = _environment(kafka)
    log_dirs = [PurePosixPath(directory) for directory in environment["KAFKA_LOG_DIRS"].split(",")]
    for directory in log_dirs:
        assert any(directory.is_relative_to(mount) for mount in mounts), f"{directory} is on no volume: {mounts}"
    # Formatted once with this id; a kept log dir and a new random id would not start.
    assert environment["CLUSTER_ID"]


def test_kafka_is_configured_like_the_test_containers_broker(compose: dict[str, Any]) -> None:
    """What ``--services=docker`` tests against is what compose runs (only hosts and data places differ)."""
    kafka = _services(compose)["kafka"]
    assert kafka["image"] == KAFKA_IMAGE == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
    environment = _environment(kafka)
    assert {name: environment.get(name) for name in KAFKA_BROKER_ENVIRONMENT} == KAFKA_BROKER_ENVIRONMENT
    assert _services(compose)["postgres"]["image"] == POSTGRES_IMAGE
    assert _services(compose)["s3"]["image"] == S3_IMAGE


def test_the_app_image_is_built_once_and_shared(compose: dict[str, Any]) -> None:
    services = _services(compose)
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["api"]
    assert services["api"]["image"] == services["worker"]["image"] == APP_IMAGE


def test_api_and_workers_are_given_the_s3_store_that_compose_runs(compose: dict[str, Any]) -> None:
    services = _services(compose)
    s3 = services["s3"]
    s3_environment = _environment(s3)
    buckets = [arg.split("=", 1)[1] for arg in s3["command"] if arg.startswith("-bucket=")]
    for name in ("api", "worker"):
        environment = _environment(services[name])
        assert set(environment) >= S3_SETTINGS, name
        blob_store = urlsplit(environment["BLOB_STORE_URL"])
        assert blob_store.scheme == "s3"
        assert blob_store.netloc in buckets, name
        assert urlsplit(environment["S3_ENDPOINT_URL"]).hostname == "s3", name
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert environment[key] == s3_environment[key], (name, key)
        assert "s3" in services[name]["depends_on"], name
