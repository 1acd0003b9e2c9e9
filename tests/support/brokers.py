"""Where the test suite's Kafka comes from: one place, never a skip.

``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers broker when a Docker engine answers; else a real
broker from the local launcher (``scripts/kafka/local.py``: Apache Kafka's own jars, run with ``java``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from scripts.kafka.local import KafkaNode

TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.9.0"


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@contextlib.contextmanager
def session_broker(data_dir: Path) -> Iterator[str]:
    """Yield the bootstrap address of a broker that lives for the ``with`` block (or longer, if external)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer  # the old path warns, and warnings are errors

        with KafkaContainer(TESTCONTAINERS_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        with KafkaNode(data_dir) as node:
            yield node.bootstrap_servers
