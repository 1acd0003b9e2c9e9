"""The load generator: a process of its own that drives HTTP load at one URL and prints one JSON object.

    python -m scripts.bench.loadgen URL --connections 32 --duration-s 5            # closed loop
    python -m scripts.bench.loadgen URL --rate 100 --duration-s 5 --body upload    # open loop

It runs apart from the server under test so the two never share a GIL or an event loop, with aiohttp's client
(its C HTTP parser keeps the client cheap) on uvloop, over at most ``--connections`` keep-alive connections.
Closed loop: each connection sends its next request as soon as the previous one answered, which finds the peak
rate. Open loop: requests are sent at fixed times whatever the answers, and latency counts from the scheduled
time, so a stalled server shows up in the latency instead of slowing the load (no coordinated omission).
Requests answered (closed loop) or scheduled (open loop) during ``--warmup-s`` are left out of the figures.
Whether this process is the bottleneck is checked by the bench against a bare endpoint; ``cpu_share`` (CPU
seconds per wall second) says how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scripts.arguments import positive_float, positive_int
from scripts.bench.stats import latency_summary_ms

REQUEST_TIMEOUT_S = 30.0
# A private address the API accepts only with ALLOW_PRIVATE_URLS; nothing fetches it (no worker runs there).
DEFAULT_IMAGE_URL = "http://127.0.0.1:9/x.png"
DEFAULT_FILTER = "grayscale"

Body = Literal["json", "upload"]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, how (closed loop when ``rate_per_s`` is None) and for how long."""

    url: str
    connections: int = 32
    duration_s: float = 5.0
    warmup_s: float = 1.0
    rate_per_s: float | None = None
    body: Body = "json"
    image_url: str = DEFAULT_IMAGE_URL
    filter: str = DEFAULT_FILTER
    upload_px: int = 16
    expect_status: int = 202
    record_ids: bool = False
    idempotency_keys: bool = False
    drain_timeout_s: float = 10.0

    def argv(self) -> list[str]:
        """The command-line arguments that :func:`parse_args` turns back into this spec."""
        args = [self.url, "--connections", str(self.connections), "--duration-s", repr(self.duration_s)]
        args += ["--warmup-s", repr(self.warmup_s), "--body", self.body, "--image-url", self.image_url]
        args += ["--filter", self.filter, "--upload-px", str(self.upload_px)]
        args += ["--expect-status", str(self.expect_status), "--drain-timeout-s", repr(self.drain_timeout_s)]
        if self.rate_per_s is not None:
            args += ["--rate", repr(self.rate_per_s)]
        if self.record_ids:
            args.append("--record-ids")
        if self.idempotency_keys:
            args.append("--idempotency-keys")
        return args


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was due (or sent), when it was answered, the status or error, the job id."""

    started: float
    finished: float
    outcome: int | str
    image_id: str | None = None


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one load run measured: successful answers per second and their latency, errors by kind."""

    mode: Literal["closed", "open"]
    ok: int
    errors: dict[str, int]
    throughput_per_s: float
    latency_ms: dict[str, float]
    cpu_share: float = 0.0
    # (image id, wall-clock time the request was due, seconds until the answer), with --record-ids.
    ids: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str) -> LoadReport:
        data = json.loads(text)
        data["ids"] = [tuple(item) for item in data.get("ids", [])]
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def parse_args(argv: Sequence[str] | None = None) -> LoadSpec:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="where to POST, e.g. http://127.0.0.1:8000/images")
    parser.add_argument("--connections", type=positive_int, default=32, help="keep-alive connections at most")
    parser.add_argument("--duration-s", type=positive_float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup-s", type=_non_negative_float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--rate", type=positive_float, dest="rate_per_s", help="open loop at this many req/s")
    parser.add_argument("--body", choices=["json", "upload"], default="json", help="JSON {url, filter} or multipart")
    parser.add_argument("--image-url", default=DEFAULT_IMAGE_URL, help="the url of a JSON body")
    parser.add_argument("--filter", default=DEFAULT_FILTER, help="the filter of every job")
    parser.add_argument("--upload-px", type=positive_int, default=16, help="side of the uploaded PNG")
    parser.add_argument("--expect-status", type=int, default=202, help="the status that counts as success")
    parser.add_argument("--record-ids", action="store_true", help="report each accepted job's id and send time")
    parser.add_argument("--idempotency-keys", action="store_true", help="a new Idempotency-Key on every request")
    parser.add_argument("--drain-timeout-s", type=positive_float, default=10.0, help="open loop: wait for answers")
    return LoadSpec(**vars(parser.parse_args(argv)))


def summarise(
    samples: Sequence[Sample], spec: LoadSpec, window: tuple[float, float], wall_offset_s: float, cpu_share: float
) -> LoadReport:
    """The figures of the samples in the measured ``window`` (monotonic seconds).

    A closed-loop sample counts when it was answered inside the window, an open-loop one when it was due inside
    it; ``wall_offset_s`` turns a monotonic time into a wall-clock one for the recorded ids.
    """
    start, end = window
    open_loop = spec.rate_per_s is not None
    measured = [s for s in samples if start <= (s.started if open_loop else s.finished) < end]
    good = [s for s in measured if s.outcome == spec.expect_status]
    errors: dict[str, int] = {}
    for sample in measured:
        if sample.outcome != spec.expect_status:
            errors[str(sample.outcome)] = errors.get(str(sample.outcome), 0) + 1
    ids = [(s.image_id, s.started + wall_offset_s, s.finished - s.started) for s in good if s.image_id is not None]
    return LoadReport(
        mode="open" if open_loop else "closed",
        ok=len(good),
        errors=errors,
        throughput_per_s=len(good) / (end - start),
        latency_ms=latency_summary_ms([s.finished - s.started for s in good]),
        cpu_share=cpu_share,
        ids=ids if spec.record_ids else [],
    )


async def generate(spec: LoadSpec) -> LoadReport:
    """Drive the load described by ``spec`` and summarise it."""
    import aiohttp  # the bench extra; imported here so the pure parts load without it

    make_body = _body_factory(spec)
    samples: list[Sample] = []
    connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=spec.connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    cpu_before = _cpu_s()
    started = time.perf_counter()
    wall_offset_s = time.time() - started
    window = (started + spec.warmup_s, started + spec.warmup_s + spec.duration_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(due: float) -> None:
            data, headers = make_body()
            image_id = None
            try:
                async with session.post(spec.url, data=data, headers=headers) as response:
                    content = await response.read()
                    outcome: int | str = response.status
                if spec.record_ids and outcome == spec.expect_status:
                    image_id = json.loads(content)["id"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            samples.append(Sample(due, time.perf_counter(), outcome, image_id))

        if spec.rate_per_s is None:

            async def user() -> None:
                while (now := time.perf_counter()) < window[1]:
                    await send(now)

            await asyncio.gather(*(user() for _ in range(spec.connections)))
        else:
            await _open_loop(send, started, spec.rate_per_s, window[1], spec.drain_timeout_s, samples)
    cpu_share = (_cpu_s() - cpu_before) / (time.perf_counter() - started)
    return summarise(samples, spec, window, wall_offset_s, cpu_share)


async def _open_loop(
    send: Callable[[float], Coroutine[Any, Any, None]],
    started: float,
    rate_per_s: float,
    end: float,
    drain_s: float,
    samples: list[Sample],
) -> None:
    """Start ``send`` at ``started + i / rate_per_s`` until ``end``; answers missing after ``drain_s`` are errors."""
    sent: list[tuple[float, asyncio.Task[None]]] = []
    while (due := started + len(sent) / rate_per_s) < end:
        delay_s = due - time.perf_counter()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        sent.append((due, asyncio.create_task(send(due))))
    if not sent:
        return
    await asyncio.wait([task for _, task in sent], timeout=drain_s)
    for due, task in sent:
        if not task.done():
            task.cancel()  # a cancelled send records nothing: it is recorded here
            samples.append(Sample(due, time.perf_counter(), "unanswered"))
    await asyncio.gather(*(task for _, task in sent), return_exceptions=True)


def _body_factory(spec: LoadSpec) -> Callable[[], tuple[Any, dict[str, str]]]:
    if spec.body == "json":
        payload = json.dumps({"url": spec.image_url, "filter": spec.filter}).encode()
        if spec.idempotency_keys:
            return lambda: (payload, {"content-type": "application/json", "idempotency-key": uuid.uuid4().hex})
        return lambda: (payload, {"content-type": "application/json"})
    import aiohttp
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (spec.upload_px, spec.upload_px), (90, 160, 30)).save(buffer, format="PNG")
    png = buffer.getvalue()

    def form() -> tuple[Any, dict[str, str]]:
        data = aiohttp.FormData()  # consumed by the request: one per request
        data.add_field("file", png, filename="bench.png", content_type="image/png")
        data.add_field("filter", spec.filter)
        return data, {}

    return form


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {text}")
    return value


async def run_loadgen(spec: LoadSpec, timeout_s: float) -> LoadReport:
    """Run the load generator as a subprocess (``python -m scripts.bench.loadgen``) and read its report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.bench.loadgen",
        *spec.argv(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"load generator exited {process.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    return LoadReport.from_json(stdout.decode())


def main(argv: Sequence[str] | None = None) -> None:
    print(_run(generate(parse_args(argv))).to_json())


def _run(work: Coroutine[Any, Any, LoadReport]) -> LoadReport:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings uvloop on Linux and macOS, not on Windows
        return asyncio.run(work)
    return uvloop.run(work)


if __name__ == "__main__":
    main()
