"""Real ``image-worker`` and ``image-api`` processes for tests that need signals, crashes and several members."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from core.settings import Settings


class ServiceProcess:
    """One console-script subprocess reading ``settings`` from its environment, its output in ``log_path``."""

    command = "image-worker"

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *args: str,
        cwd: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """``environment`` adds variables that are no setting (the OpenTelemetry SDK's own, say)."""
        executable = shutil.which(self.command, path=str(Path(sys.executable).parent))
        assert executable is not None, f"{self.command} is not installed in this environment"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [executable, *args],
                env={**settings.as_environment(), **(environment or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class WorkerProcess(ServiceProcess):
    """An ``image-worker``: one member of the settings' consumer group."""

    command = "image-worker"


class ApiProcess(ServiceProcess):
    """An ``image-api`` on ``127.0.0.1:port``."""

    command = "image-api"

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        port: int,
        *args: str,
        cwd: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        address = ("--host", "127.0.0.1", "--port", str(port))
        super().__init__(
            settings, log_path, *address, "--log-level", "warning", *args, cwd=cwd, environment=environment
        )
        self.base_url = f"http://127.0.0.1:{port}"
