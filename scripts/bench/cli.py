"""``python -m scripts.bench``: measure the pipeline as ratios against limits measured in the same run.

    .venv/bin/python -m scripts.bench                       # all comparisons, median of 3 runs
    .venv/bin/python -m scripts.bench --only accept worker  # some of them
    .venv/bin/python -m scripts.bench --quick --runs 1      # tiny sizes: checks that the bench works

Comparisons: accept (POST /images against a bare endpoint and a raw producer), worker (the Worker against a
raw consume loop), concurrency (key-ordered concurrency against the ideal and a partition-bound consumer),
scale_out (1 then 2 worker processes on CPU-bound jobs), end_to_end (POST to done), console (the console's
pages with 10,000 jobs in PostgreSQL). A Kafka broker is started
from the local launcher unless ``KAFKA_BOOTSTRAP_SERVERS`` names one. Progress goes to stderr, the table to
stdout, and a JSON document and a PNG chart to ``--out``. Exit status 1 when a comparison could not be measured
(a missed goal is a result, not a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from scripts.bench import accept, concurrency, console, end_to_end, machine, report, scale_out, worker_path
from scripts.bench.context import Context, print_progress
from scripts.bench.results import Benchmark, Comparison, build_comparison, failed_comparison
from scripts.bench.workload import warm_up_broker
from scripts.kafka.local import KafkaNode

T = TypeVar("T")

BENCHMARKS: dict[str, Benchmark] = {
    bench.name: bench
    for bench in (
        accept.BENCHMARK,
        worker_path.BENCHMARK,
        concurrency.BENCHMARK,
        scale_out.BENCHMARK,
        end_to_end.BENCHMARK,
        console.BENCHMARK,
    )
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these")
    parser.add_argument("--runs", type=int, default=3, help="runs per comparison; figures are medians (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the bench itself works")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for the JSON and PNG")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    selected = [BENCHMARKS[name] for name in (args.only or BENCHMARKS)]
    started_at = dt.datetime.now(dt.UTC)
    host = machine.machine()
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as scratch,
        _broker(Path(scratch)) as (bootstrap_servers, broker_version),
    ):
        comparisons = [
            _run_benchmark(bench, bootstrap_servers, Path(scratch), args.quick, args.runs) for bench in selected
        ]
    doc = report.document(
        comparisons,
        machine=host,
        versions=machine.versions(broker_version),
        runs=args.runs,
        quick=args.quick,
        command=[Path(sys.executable).name, "-m", "scripts.bench", *(argv if argv is not None else sys.argv[1:])],
        started_at=started_at.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{started_at:%Y%m%dT%H%M%SZ}"
    report.write_json(doc, stem.with_suffix(".json"))
    subtitle = f"{host['cpu_count']} x {host['cpu_model']}, {args.runs} run(s){', quick' if args.quick else ''}"
    report.write_chart(comparisons, stem.with_suffix(".png"), subtitle)
    print(report.table(comparisons, args.runs))
    print(f"results: {stem.with_suffix('.json')}, chart: {stem.with_suffix('.png')}")
    sys.exit(1 if any(comparison.error for comparison in comparisons) else 0)


@contextlib.contextmanager
def _broker(scratch: Path) -> Iterator[tuple[str, str]]:
    """A broker for the whole invocation: the one ``KAFKA_BOOTSTRAP_SERVERS`` names, else a local one."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        print_progress(f"using the Kafka broker at {configured}")
        asyncio.run(warm_up_broker(configured, scratch))
        yield configured, "unknown (external broker)"
        return
    node = KafkaNode(scratch / "kafka")
    print_progress(f"starting Kafka {node.version} from the local launcher...")
    began = time.monotonic()
    with node:
        asyncio.run(warm_up_broker(node.bootstrap_servers, scratch))
        print_progress(f"Kafka ready at {node.bootstrap_servers} in {time.monotonic() - began:.1f} s")
        yield node.bootstrap_servers, node.version


def _run_benchmark(bench: Benchmark, bootstrap_servers: str, scratch: Path, quick: bool, runs: int) -> Comparison:
    """All runs of one comparison; an error ends it (recorded, printed) but not the other comparisons."""
    plan = bench.plan(quick)
    samples: list[Mapping[str, float]] = []
    notes: list[str] = []
    print_progress(f"[{bench.name}] {bench.title}")
    began = time.monotonic()
    for run in range(1, runs + 1):
        ctx = Context(bootstrap_servers, scratch, quick, run, runs, print_progress)
        try:
            result = _run_async(bench.measure(ctx), bench.uvloop)
        except Exception as exc:  # reported and recorded; the other comparisons still run
            traceback.print_exc(file=sys.stderr)
            return failed_comparison(bench.name, bench.title, plan, f"run {run}: {type(exc).__name__}: {exc}", notes)
        samples.append(result.values)
        notes.extend(f"run {run}: {note}" for note in result.notes)
    print_progress(f"[{bench.name}] done in {time.monotonic() - began:.0f} s")
    return build_comparison(bench.name, bench.title, plan, samples, notes)


def _run_async(work: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(work)
