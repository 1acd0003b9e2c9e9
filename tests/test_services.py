"""The test-services chooser: every branch with the engine probe injected, then the real wiring in a pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import Choice, Services, ServicesUnavailable, choose_services, docker_engine_answers

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = "broker-1.example.net:9092"


class Probe:
    """A Docker engine probe that answers as told and counts how often it was asked."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answers


def choose(option: str | None = None, probe: Probe | None = None, **environ: str) -> Choice:
    return choose_services(option, environ, probe or Probe(answers=False))


def test_auto_takes_the_named_broker_without_asking_docker() -> None:
    probe = Probe(answers=True)
    choice = choose(probe=probe, KAFKA_BOOTSTRAP_SERVERS=BOOTSTRAP)
    assert choice == Choice(Services.EXTERNAL, f"auto: KAFKA_BOOTSTRAP_SERVERS={BOOTSTRAP}", BOOTSTRAP)
    assert probe.calls == 0


def test_auto_takes_docker_when_an_engine_answers() -> None:
    choice = choose(probe=Probe(answers=True))
    assert choice.services is Services.DOCKER
    assert choice.header() == "services: docker (auto: a Docker engine answered; KAFKA_BOOTSTRAP_SERVERS unset)"


def test_auto_falls_back_to_local_and_says_why() -> None:
    choice = choose(probe=Probe(answers=False))
    assert choice.services is Services.LOCAL
    assert choice.header() == "services: local (auto: no Docker engine answered; KAFKA_BOOTSTRAP_SERVERS unset)"


def test_an_empty_bootstrap_variable_counts_as_unset() -> None:
    assert choose(KAFKA_BOOTSTRAP_SERVERS="").services is Services.LOCAL
    with pytest.raises(ServicesUnavailable, match="KAFKA_BOOTSTRAP_SERVERS"):
        choose("external", KAFKA_BOOTSTRAP_SERVERS="")


def test_local_never_asks_docker_and_says_a_named_broker_is_ignored() -> None:
    probe = Probe(answers=True)
    choice = choose("local", probe, KAFKA_BOOTSTRAP_SERVERS=BOOTSTRAP)
    assert choice == Choice(Services.LOCAL, "--services=local; KAFKA_BOOTSTRAP_SERVERS is set but not used")
    assert probe.calls == 0


def test_docker_with_an_engine() -> None:
    choice = choose("docker", Probe(answers=True))
    assert choice == Choice(Services.DOCKER, "--services=docker; a Docker engine answered")


def test_docker_without_an_engine_stops_the_session() -> None:
    with pytest.raises(ServicesUnavailable, match=r"--services=docker needs a Docker engine.*--services=local"):
        choose("docker", Probe(answers=False))


def test_external_uses_the_named_broker_without_asking_docker() -> None:
    probe = Probe(answers=True)
    choice = choose("external", probe, KAFKA_BOOTSTRAP_SERVERS=BOOTSTRAP)
    assert choice == Choice(Services.EXTERNAL, f"--services=external; KAFKA_BOOTSTRAP_SERVERS={BOOTSTRAP}", BOOTSTRAP)
    assert probe.calls == 0


def test_external_without_a_named_broker_stops_the_session() -> None:
    with pytest.raises(ServicesUnavailable, match="--services=external needs KAFKA_BOOTSTRAP_SERVERS"):
        choose("external")


def test_the_variable_chooses_when_the_option_is_absent() -> None:
    choice = choose(None, Probe(answers=True), TEST_SERVICES="Docker")
    assert choice == Choice(Services.DOCKER, "TEST_SERVICES=Docker; a Docker engine answered")


def test_the_option_wins_over_the_variable() -> None:
    assert choose("local", TEST_SERVICES="docker").services is Services.LOCAL


def test_a_variable_naming_no_mode_stops_the_session() -> None:
    with pytest.raises(ServicesUnavailable, match=r"TEST_SERVICES='dokcer' names no mode.*auto, local, docker"):
        choose(None, TEST_SERVICES="dokcer")


def test_no_docker_client_means_no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert docker_engine_answers() is False


def test_support_modules_import_with_warnings_as_errors() -> None:
    """A deprecated import (``testcontainers.kafka``, say) would fail Docker users before their first test."""
    modules = "tests.conftest, tests.support.brokers, tests.support.containers, tests.support.services"
    imported = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {modules}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr


def _pytest(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """A pytest run that only collects this module, with no Docker client on PATH and ``environ`` added."""
    variables = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "TEST_SERVICES"}}
    variables |= {"PATH": str(Path(sys.executable).parent), **environ}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", *args, __file__],
        cwd=ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_header_says_which_services_and_why() -> None:
    run = _pytest("--services=local")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "services: local (--services=local)" in run.stdout


def test_docker_asked_for_without_an_engine_is_a_usage_error() -> None:
    run = _pytest(TEST_SERVICES="docker")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "test services: TEST_SERVICES=docker needs a Docker engine" in run.stderr


def test_external_asked_for_without_a_broker_is_a_usage_error() -> None:
    run = _pytest("--services=external", TEST_SERVICES="local")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "--services=external needs KAFKA_BOOTSTRAP_SERVERS" in run.stderr
