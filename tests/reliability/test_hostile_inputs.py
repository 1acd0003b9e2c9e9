"""Scenarios 9 and 10: hostile downloads and image bombs against a real worker process.

9. Servers that send a body far over ``MAX_DOWNLOAD_BYTES`` (announced or not), lie in Content-Length, stream
   chunked data without end or trickle a byte a second: each download is cut off at the byte limit or the total
   deadline and dead-lettered with the matching error code; the worker's peak memory stays within a few times
   the byte limit per download; no temporary file is left or held open.
10. A PNG declaring 100000x100000 pixels, a highly compressible 12000x12000 one, EPS and PDF files disguised as
    PNG and a truncated PNG, served from loopback and uploaded through the API (which refuses what it can tell
    at upload with 422): each is dead-lettered with a clear error, the worker never dies (same pid, good jobs
    done after them) and never starts another program (no Ghostscript: its process tree is watched throughout).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import struct
import time
from pathlib import Path

import httpx

from core.settings import Settings
from tests.reliability.conftest import StartApi
from tests.reliability.harness import Scale, count_figures, drain, record_figures, wait_until_ready
from tests.reliability.hostile import (
    EnvWorkerProcess,
    create_job_schema,
    dead_letters,
    headers_of,
    memory_of,
    missing_metadata,
    open_files_of,
    routes,
    watching,
)
from tests.support.events import as_record, url_event
from tests.support.http_servers import Hit, Responder, respond
from tests.support.image_server import ImageServer
from tests.support.images import png_declaring, truncated_png
from tests.support.processes import ServiceProcess
from tests.support.worker import eventually, produce

LIMIT_BYTES = 1_000_000
FETCH_TIMEOUT_S = 2.0
HUGE_BYTES = 100_000_000
CHUNK = b"\0" * 65536
TOO_LARGE = "download_too_large"
TIMEOUT = "download_timeout"
UNSUPPORTED = "unsupported_image"


class Wire:
    """What the hostile server managed to send per path, and when each path was asked for."""

    def __init__(self) -> None:
        self.sent_bytes: collections.Counter[str] = collections.Counter()
        self.asked_at: dict[str, list[float]] = collections.defaultdict(list)

    def gaps_s(self, path: str, below_s: float) -> list[float]:
        """Times between one request for ``path`` and the next (a retry comes after the previous try gave up),
        leaving out gaps of ``below_s`` or more (between rounds)."""
        times = self.asked_at[path]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        return [gap for gap in gaps if gap < below_s]

    def streaming(self, head: bytes, body: bytes, *, repeat: int, every_s: float = 0.0) -> Responder:
        """Write ``head``, then ``body`` up to ``repeat`` times (pausing ``every_s``) until the client hangs up."""

        async def responder(hit: Hit, writer: asyncio.StreamWriter) -> None:
            self.asked_at[hit.path].append(time.monotonic())
            writer.write(head)
            for _ in range(repeat):
                writer.write(body)
                await writer.drain()
                self.sent_bytes[hit.path] += len(body)
                if every_s:
                    await asyncio.sleep(every_s)

        return responder


def _head(*headers: str) -> bytes:
    return ("\r\n".join(["HTTP/1.1 200 OK", "Content-Type: image/png", *headers]) + "\r\n\r\n").encode()


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_hostile_downloads_are_cut_off_at_the_limit_or_the_deadline(
    reliability_settings: Settings,
    images: ImageServer,
    processes: list[ServiceProcess],
    scale: Scale,
    tmp_path: Path,
) -> None:
    settings = reliability_settings.model_copy(
        update={"fetch_timeout_s": FETCH_TIMEOUT_S, "max_download_bytes": LIMIT_BYTES}
    )
    wire = Wire()
    hostile = {
        # Announces 100 MB: refused from the header, nothing read.
        "/declared-huge.png": (wire.streaming(_head(f"Content-Length: {HUGE_BYTES}"), CHUNK, repeat=1526), TOO_LARGE),
        # Announces nothing, sends 100 MB and closes: only the running count stops it.
        "/undeclared-huge.png": (wire.streaming(_head("Connection: close"), CHUNK, repeat=1526), TOO_LARGE),
        # Endless chunked body (bounded at ~650 MB so a broken worker cannot hang the test).
        "/endless-chunked.png": (
            wire.streaming(_head("Transfer-Encoding: chunked"), _chunked(CHUNK), repeat=10_000),
            TOO_LARGE,
        ),
        # Says 1000 bytes, sends 100 MB: the framing ends the body at 1000 bytes, which are no image.
        "/lying-short.png": (wire.streaming(_head("Content-Length: 1000"), CHUNK, repeat=1526), UNSUPPORTED),
        # Says 500 kB (under the limit), sends 1000 bytes and goes silent: the deadline ends it.
        "/lying-long.png": (
            wire.streaming(_head("Content-Length: 500000"), b"\0" * 1000, repeat=2, every_s=FETCH_TIMEOUT_S + 1),
            TIMEOUT,
        ),
        # One byte a second: never idle long enough for a per-read timeout, only the total deadline stops it.
        "/trickle.png": (wire.streaming(_head("Content-Length: 10000"), b"\0", repeat=120, every_s=1.0), TIMEOUT),
    }
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    await create_job_schema(settings)
    worker = EnvWorkerProcess(settings, tmp_path / "worker.log", extra_env={"TMPDIR": str(worker_tmp)})
    processes.append(worker)

    async with routes({path: responder for path, (responder, _) in hostile.items()}) as server:
        warm_up = [url_event(images.url(f"/img/{seed}.png")) for seed in range(8)]
        await produce(settings, map(as_record, warm_up))
        await drain(settings, [str(event.image_id) for event in warm_up], timeout_s=60)
        before = memory_of(worker.pid)

        rounds = scale.pick(1, 5)
        expected: dict[bytes, str] = {}
        started = time.monotonic()
        for _ in range(rounds):
            events = {path: url_event(server.url(path)) for path in hostile}
            expected.update({str(event.image_id).encode(): hostile[path][1] for path, event in events.items()})
            await produce(settings, map(as_record, events.values()))
            await drain(settings, [key.decode() for key in expected], timeout_s=120)
        drain_s = time.monotonic() - started
        after = memory_of(worker.pid)

        later = [url_event(images.url(f"/img/{seed}.png")) for seed in range(100, 108)]
        await produce(settings, map(as_record, later))
        await drain(settings, [str(event.image_id) for event in later], timeout_s=60)
        await eventually(
            lambda: _dead_letters_at_least(settings, len(expected)), what="every hostile job dead-lettered"
        )

    dead = await dead_letters(settings)
    good_ids = [str(event.image_id) for event in [*warm_up, *later]]
    figures = await count_figures(settings, [*good_ids, *(key.decode() for key in expected)], images, drain_s=drain_s)
    growth_kib = after.peak_rss_kib - before.rss_kib
    bound_kib = len(hostile) * 3 * LIMIT_BYTES // 1024 + 16 * 1024
    leftovers = sorted(str(path) for path in settings.storage_dir.rglob("*.tmp")) + sorted(
        str(path) for path in worker_tmp.iterdir()
    )
    held = [path for path in open_files_of(worker.pid) if path.startswith((str(worker_tmp), str(settings.storage_dir)))]
    line = record_figures(
        "hostile-downloads",
        figures,
        rss_before_mib=before.rss_kib / 1024,
        peak_rss_growth_mib=growth_kib / 1024,
        growth_bound_mib=bound_kib / 1024,
        max_sent_mib=max(wire.sent_bytes.values()) / 2**20,
        longest_try_s=max(wire.gaps_s("/trickle.png", 30.0) + wire.gaps_s("/lying-long.png", 30.0)),
        temp_files_left=len(leftovers) + len(held),
    )

    codes = {record.key: headers_of(record)["dlq.error.code"] for record in dead}
    assert codes == expected, line
    for record in dead:
        headers = headers_of(record)
        assert missing_metadata(record) == [], record.key
        if headers["dlq.error.code"] == TIMEOUT:
            assert headers["dlq.attempts"] == str(settings.max_attempts), "a timeout is retried, then dead-lettered"
            assert f"longer than {FETCH_TIMEOUT_S:g} s" in headers["dlq.error.message"]
        if headers["dlq.error.code"] == TOO_LARGE:
            assert f"limit of {LIMIT_BYTES}" in headers["dlq.error.message"]
    assert figures.done == len(good_ids), f"good jobs before and after the hostile ones: {line}"
    assert figures.failed == len(expected), line
    assert figures.lost == 0, line
    # The worker hung up near the limit: what the server got out is the limit plus the sockets' buffers, never
    # the 100 MB (or endless) body.
    for path in ("/undeclared-huge.png", "/endless-chunked.png", "/lying-short.png"):
        assert wire.sent_bytes[path] < rounds * 20 * LIMIT_BYTES, (path, wire.sent_bytes[path])
    # Each try of a slow download ended at the deadline: the next try came one deadline (plus back-off) later.
    retry_gap_bound_s = FETCH_TIMEOUT_S + settings.retry_backoff_max_s + 1.5
    for path in ("/trickle.png", "/lying-long.png"):
        assert len(wire.asked_at[path]) == rounds * settings.max_attempts, (path, wire.asked_at[path])
        gaps = wire.gaps_s(path, below_s=3 * retry_gap_bound_s)
        assert all(FETCH_TIMEOUT_S * 0.9 < gap < retry_gap_bound_s for gap in gaps), (path, gaps)
    assert growth_kib < bound_kib, f"worker memory grew past a few times the byte limit per download: {line}"
    assert leftovers == [], leftovers
    assert held == [], held
    assert worker.process.poll() is None, worker.log()


# --- image bombs ------------------------------------------------------------------------------------------------------


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n/Helvetica findfont 5 scalefont setfont\nshowpage\n%%EOF\n"
BINARY_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n%%EOF\n"
TOO_MANY_PIXELS = "too many pixels"
NOT_ALLOWED = "not an image in an accepted format"
TRUNCATED = "cannot decode the image"


async def test_image_bombs_are_dead_lettered_and_the_worker_survives_without_helpers(
    reliability_settings: Settings,
    images: ImageServer,
    start_api: StartApi,
    processes: list[ServiceProcess],
    scale: Scale,
    tmp_path: Path,
) -> None:
    settings = reliability_settings
    bombs = {
        "/declared-100000x100000.png": (png_declaring(100_000, 100_000, rows=1), TOO_MANY_PIXELS),
        "/zeros-12000x12000.png": (png_declaring(12_000, 12_000, depth=8), TOO_MANY_PIXELS),
        "/eps-as.png": (EPS, NOT_ALLOWED),
        "/binary-eps-as.png": (BINARY_EPS, NOT_ALLOWED),
        "/pdf-as.png": (PDF, NOT_ALLOWED),
        "/truncated.png": (truncated_png(), TRUNCATED),
    }
    # What the API can tell at upload (format, declared size) is 422; a truncated body with a good header is not.
    uploads = {"eps-as.png": 422, "pdf-as.png": 422, "declared-100000x100000.png": 422, "truncated.png": 202}
    # A fake Ghostscript first on the worker's PATH: Pillow's EPS plug-in would run it (``gs --version`` first), so
    # a worker that let EPS through leaves a mark, even where no real Ghostscript is installed.
    fake_bin, gs_ran = tmp_path / "bin", tmp_path / "gs-ran"
    fake_bin.mkdir()
    (fake_bin / "gs").write_text(f'#!/bin/sh\necho "$@" >> {gs_ran}\nsleep 1\nexit 1\n')
    (fake_bin / "gs").chmod(0o755)
    api = start_api(settings)
    await create_job_schema(settings)
    worker = EnvWorkerProcess(settings, tmp_path / "worker.log", extra_env={"PATH": f"{fake_bin}:{os.defpath}"})
    processes.append(worker)
    await wait_until_ready(api.base_url)
    pid = worker.pid

    table = {path: respond(body=body, headers=[("Content-Type", "image/png")]) for path, (body, _) in bombs.items()}
    async with routes(table) as server, watching(pid) as watch:
        expected: dict[str, str] = {}  # image id -> error message fragment
        upload_statuses: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for name in uploads:
                body, fragment = bombs[f"/{name}"]
                response = await client.post(
                    "/images", files={"file": (name, body, "image/png")}, data={"filter": "blur"}
                )
                upload_statuses[name] = response.status_code
                if response.status_code == 202:
                    expected[response.json()["id"]] = fragment
        for _ in range(scale.pick(1, 5)):
            events = {path: url_event(server.url(path), "blur") for path in bombs}
            expected.update({str(event.image_id): bombs[path][1] for path, event in events.items()})
            await produce(settings, map(as_record, events.values()))
        started = time.monotonic()
        await drain(settings, expected, timeout_s=120)
        drain_s = time.monotonic() - started
        later = [url_event(images.url(f"/img/{seed}.png"), "blur") for seed in range(8)]
        await produce(settings, map(as_record, later))
        await drain(settings, [str(event.image_id) for event in later], timeout_s=60)
        await eventually(lambda: _dead_letters_at_least(settings, len(expected)), what="every bomb dead-lettered")
        peak = memory_of(pid)

    dead = await dead_letters(settings)
    figures = await count_figures(settings, [*expected, *(str(e.image_id) for e in later)], images, drain_s=drain_s)
    line = record_figures(
        "image-bombs",
        figures,
        upload_422=sum(status == 422 for status in upload_statuses.values()),
        worker_alive=worker.process.poll() is None,
        child_processes=len(watch.descendants),
        process_samples=watch.samples,
        peak_rss_mib=peak.peak_rss_kib / 1024,
    )
    assert upload_statuses == uploads, line
    messages = {record.key.decode(): headers_of(record)["dlq.error.message"] for record in dead}
    assert messages.keys() == expected.keys(), line
    wrong = {key: message for key, message in messages.items() if expected[key] not in message}
    assert wrong == {}, wrong
    assert all(missing_metadata(record) == [] for record in dead)
    codes = {record.key.decode(): headers_of(record)["dlq.error.code"] for record in dead}
    assert codes == {
        key: "corrupt_image" if fragment == TRUNCATED else UNSUPPORTED for key, fragment in expected.items()
    }
    assert all(headers_of(record)["dlq.attempts"] == "1" for record in dead), "a bomb is not worth a retry"
    assert watch.descendants == {}, f"the worker started other programs: {watch.descendants}"
    assert watch.samples > 10, "the process tree was sampled throughout"
    assert not watch.vanished, worker.log()
    assert worker.process.poll() is None, worker.log()
    assert figures.done == len(later), f"good jobs after the bombs: {line}"
    assert figures.lost == 0, line
    assert not gs_ran.exists(), f"Ghostscript was run: {gs_ran.read_text()}"


async def _dead_letters_at_least(settings: Settings, count: int) -> bool:
    return len(await dead_letters(settings)) >= count
