"""The console scripts as a user meets them: useful --help, and a bad setting named instead of a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(command[0], path=str(BIN))
    assert executable is not None, f"{command[0]} is not installed"
    return subprocess.run(
        [executable, *command[1:]], capture_output=True, text=True, timeout=60, env=os.environ | env, check=False
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("image-api", ["--host", "--port", "KAFKA_BOOTSTRAP_SERVERS"]),
        ("image-worker", ["--concurrency", "--group", "--metrics-port", "SIGTERM"]),
        ("image-kafka", ["start", "stop", "fetch"]),
        ("image-replay", ["reset", "redrive"]),
        ("image-migrate", ["--check", "DATABASE_URL"]),
    ],
)
def test_help(command: str, expected: list[str]) -> None:
    result = run([command, "--help"])
    assert result.returncode == 0
    for text in expected:
        assert text in result.stdout


@pytest.mark.parametrize("command", ["image-api", "image-worker", "image-migrate"])
def test_bad_setting_is_named_without_a_traceback(command: str) -> None:
    result = run([command], TOPIC_PARTITIONS="zero")
    assert result.returncode != 0
    assert "invalid settings" in result.stderr
    assert "TOPIC_PARTITIONS: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["image-api", "image-worker", "image-replay"])
def test_a_kafka_client_setting_of_no_meaning_here_stops_the_command(command: str) -> None:
    """A Java client's truststore setting, silently ignored, would leave the service trusting other CAs."""
    argv = [command, "redrive"] if command == "image-replay" else [command]
    result = run(argv, KAFKA_SSL_TRUSTSTORE_LOCATION="/etc/kafka/truststore.jks", KAFKA_HEAP_OPTS="-Xmx1G")
    assert result.returncode != 0
    assert "KAFKA_SSL_TRUSTSTORE_LOCATION: not a setting of this version" in result.stderr
    assert "KAFKA_HEAP_OPTS" not in result.stderr, "Kafka's own script variables are not client settings"
    assert "Traceback" not in result.stderr
