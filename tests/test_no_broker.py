"""Without a broker, every command says so in a few seconds, in few lines: no stack trace, no 60 s silence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import WorkerProcess
from tests.support.settings import make_settings
from tests.support.worker import eventually

NO_BROKER = "127.0.0.1:9"  # nothing listens there


async def test_a_worker_without_broker_says_so_within_seconds_and_keeps_trying(tmp_path: Path) -> None:
    worker = WorkerProcess(make_settings(NO_BROKER, tmp_path), tmp_path / "worker.log")
    try:

        async def reported() -> bool:
            return any("Kafka unavailable:" in line and "127.0.0.1" in line for line in worker.log().splitlines())

        await eventually(reported, timeout_s=10.0, what="the worker reporting the missing broker")
        assert worker.process.poll() is None, "it keeps trying instead of exiting"
        assert "Traceback" not in worker.log()
    finally:
        worker.stop()


@pytest.mark.parametrize("argv", [["reset", "--topic", "images", "--to-earliest"], ["redrive"]])
def test_image_replay_without_broker_is_one_line(tmp_path: Path, argv: list[str]) -> None:
    executable = shutil.which("image-replay", path=str(Path(sys.executable).parent))
    assert executable is not None
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": NO_BROKER, "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    done = subprocess.run([executable, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "KafkaConnectionError: Unable to bootstrap" in done.stderr
    assert "KafkaConnectionError: KafkaConnectionError" not in done.stderr
