"""Helpers of the poison, SSRF and hostile-input scenarios: worker processes with extra environment, dead letters
by key, a worker's memory and child processes read from ``/proc``, and a raw HTTP server routing by path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiokafka import ConsumerRecord

from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from core.topics import TopicMissing
from tests.support.http_servers import Hit, RawHttpServer, Responder, respond, serving
from tests.support.kafka_reads import read_topic
from tests.support.processes import WorkerProcess

DLQ_METADATA = (
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.original.timestamp",
    "dlq.error.code",
    "dlq.error.class",
    "dlq.error.message",
    "dlq.error.traceback",
    "dlq.attempts",
    "dlq.first_failure_at",
    "dlq.last_failure_at",
    "dlq.worker_id",
    "dlq.consumer_group",
)


class EnvWorkerProcess(WorkerProcess):
    """An ``image-worker`` run as ``python -m tests.reliability.stand_in_worker`` (the worker's own CLI) with
    ``extra_env`` on top of the settings' environment (``TMPDIR``, ``STAND_IN_PUBLIC_ADDRESS``)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.stand_in_worker"],
                env=settings.as_environment() | dict(extra_env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid


async def dead_letters(settings: Settings) -> list[ConsumerRecord]:
    """Every record on the DLQ (none if the topic does not exist yet)."""
    try:
        return await read_topic(settings, settings.dlq_topic)
    except TopicMissing:
        return []


def headers_of(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode(errors="replace") for name, value in record.headers}


def missing_metadata(record: ConsumerRecord) -> list[str]:
    """The ``dlq.*`` headers a dead letter lacks (or has empty)."""
    headers = headers_of(record)
    return [name for name in DLQ_METADATA if not headers.get(name)]


# --- a process seen from /proc --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Memory:
    rss_kib: int
    peak_rss_kib: int


def memory_of(pid: int) -> Memory:
    """VmRSS and VmHWM (the peak resident set since the process started) of ``pid``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Memory(rss_kib=int(fields["VmRSS"].split()[0]), peak_rss_kib=int(fields["VmHWM"].split()[0]))


def descendants_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``, read from ``/proc/<pid>/task/*/children``."""
    found: list[tuple[int, str]] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, children.read_text().split()):
                    with contextlib.suppress(OSError):
                        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                        found.append((child, command.strip()))
                    pending.append(child)
    return found


def is_running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def open_files_of(pid: int) -> list[str]:
    """Paths of the regular files ``pid`` holds open (sockets, pipes and the like left out)."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink()
            if target.is_absolute() and target.exists():
                paths.append(str(target))
    return paths


@dataclasses.dataclass
class ProcessWatch:
    """What a background sampler saw of a process: every descendant, the highest RSS, whether it went away."""

    pid: int
    descendants: dict[int, str] = dataclasses.field(default_factory=dict)
    samples: int = 0
    vanished: bool = False


@contextlib.asynccontextmanager
async def watching(pid: int, every_s: float = 0.02) -> AsyncIterator[ProcessWatch]:
    """Sample ``pid``'s descendants every ``every_s`` while the block runs."""
    watch = ProcessWatch(pid)

    async def sample() -> None:
        while True:
            if not is_running(pid):
                watch.vanished = True
                return
            watch.descendants.update(descendants_of(pid))
            watch.samples += 1
            await asyncio.sleep(every_s)

    task = asyncio.create_task(sample())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- a raw HTTP server with one responder per path ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def routes(table: Mapping[str, Responder], host: str = "127.0.0.1") -> AsyncIterator[RawHttpServer]:
    """A loopback server answering each path (query ignored) with its responder, anything else with 404."""
    not_found = respond(404, b"no such thing")

    async def route(hit: Hit, writer: asyncio.StreamWriter) -> None:
        await table.get(hit.path.split("?", 1)[0], not_found)(hit, writer)

    async with serving(route, host=host) as server:
        yield server


async def create_job_schema(settings: Settings) -> None:
    """Migrate the job database before a worker starts, so a scenario without an API can poll it from the start."""
    jobs = JobStore.from_url(settings.database_url)
    try:
        await upgrade(jobs.engine)
    finally:
        await jobs.close()
