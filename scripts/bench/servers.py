"""Real server processes for the benchmarks: ``image-api``, the bare endpoint, ``image-worker``.

Each is started as a subprocess reading its settings from the environment, as in production, and is used only
once it says it is ready: the API's ``/readyz`` (broker and database answer), the bare app's ``/healthz``, and
for workers the consumer group being Stable with all of them as members. A process that exits while being
waited for fails the wait at once, with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.kafka_connection import kafka_connection
from core.settings import Settings
from producer.cli import KEEP_ALIVE_TIMEOUT_S
from scripts.bench.context import BenchError
from scripts.kafka.local import free_ports

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
READY_POLL_S = 0.05
# The options image-api passes to uvicorn.run; the bare app gets the same through uvicorn's CLI, so both run in
# one process with uvicorn's defaults ("auto": uvloop and httptools when installed, as they are here).
UVICORN_OPTIONS = ("--host", "127.0.0.1", "--log-level", "warning")
BARE_UVICORN_OPTIONS = (*UVICORN_OPTIONS, "--timeout-keep-alive", str(KEEP_ALIVE_TIMEOUT_S))  # as image-api's
WORKER_LOG_LEVEL = "warning"  # one info line per job would put the cost of logging into the figures


class Service:
    """One subprocess with its output in ``log_path``; :meth:`stop` sends SIGTERM, then SIGKILL."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(list(argv), env=env, stdout=log, stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        if (code := self.process.poll()) is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.log_path.stem} exited with code {code}; log tail:\n{tail}")

    async def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)


def console_script(name: str) -> str:
    """The path of one of this project's console scripts in the running virtualenv."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise BenchError(f"{name} is not installed in this environment: run `make install`")
    return found


async def wait_http_ok(service: Service, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200; fail early if ``service`` exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            service.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if loop.time() >= deadline:
                raise BenchError(f"{url} did not answer 200 within {timeout_s:g} s")
            await asyncio.sleep(READY_POLL_S)


@contextlib.asynccontextmanager
async def api_server(settings: Settings, folder: Path, processes: int = 1) -> AsyncIterator[str]:
    """``image-api`` (``--workers processes``) on a free port, ready (broker and database answer); yields its URL."""
    [port] = free_ports(1)
    argv = [console_script("image-api"), *UVICORN_OPTIONS, "--port", str(port), "--workers", str(processes)]
    service = Service(argv, settings.as_environment(), folder / "image-api.log")
    try:
        await wait_http_ok(service, f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def bare_server(folder: Path) -> AsyncIterator[str]:
    """The bare endpoint (:mod:`scripts.bench.bare_app`) under uvicorn with image-api's options; yields its URL."""
    async with _uvicorn_app("scripts.bench.bare_app:app", {}, folder / "bare-app.log") as url:
        yield url


@contextlib.asynccontextmanager
async def peer_server(settings: Settings, folder: Path) -> AsyncIterator[str]:
    """The FastStream peer endpoint (:mod:`scripts.bench.peer_app`) under uvicorn as the bare app; yields its URL."""
    async with _uvicorn_app("scripts.bench.peer_app:app", settings.as_environment(), folder / "peer-app.log") as url:
        yield url


@contextlib.asynccontextmanager
async def _uvicorn_app(app: str, env: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """``app`` under ``python -m uvicorn`` with image-api's options on a free port, once ``/healthz`` answers."""
    [port] = free_ports(1)
    argv = [sys.executable, "-m", "uvicorn", app, *BARE_UVICORN_OPTIONS, "--port", str(port)]
    service = Service(argv, env, log_path)
    try:
        await wait_http_ok(service, f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def worker_processes(settings: Settings, folder: Path, count: int, *args: str) -> AsyncIterator[list[Service]]:
    """``count`` ``image-worker`` processes in the settings' group, yielded once the group is Stable with all."""
    executable = console_script("image-worker")
    workers: list[Service] = []
    try:
        for index in range(count):
            argv = [executable, "--log-level", WORKER_LOG_LEVEL, *args]
            workers.append(Service(argv, settings.as_environment(), folder / f"image-worker-{index}.log"))
        await wait_group_stable(settings, workers)
        yield workers
    finally:
        await asyncio.gather(*(worker.stop() for worker in workers))


async def wait_group_stable(settings: Settings, members: list[Service], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the group coordinator until the group is Stable with one member per process in ``members``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    admin = AIOKafkaAdminClient(**kafka_connection(settings))
    await admin.start()
    try:
        while True:
            for member in members:
                member.check_alive()
            if await _stable_members(admin, settings.consumer_group) == len(members):
                return
            if loop.time() >= deadline:
                raise BenchError(f"group {settings.consumer_group} not Stable with {len(members)} member(s)")
            await asyncio.sleep(READY_POLL_S * 2)
    finally:
        await admin.close()


async def _stable_members(admin: AIOKafkaAdminClient, group: str) -> int:
    try:
        # One group per request: aiokafka 0.14 misreads a DescribeGroups response that holds several.
        [response] = await admin.describe_consumer_groups([group])
    except KafkaError:  # e.g. the coordinator is still being elected
        return 0
    [described] = response.to_object()["groups"]
    return len(described["members"]) if described["state"] == "Stable" else 0
