"""``image-replay redrive`` against the real broker: fixed causes, interrupted runs, filters, dry runs, the cap."""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import functools
import io
import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from core import redrive
from core.dead_letter_reader import committed_offsets, header
from core.jobs import JobStatus, JobStore
from core.redrive import RedriveOptions
from core.settings import Settings
from scripts.replay import redrive as redrive_cli
from tests.support.dead_letters import (
    HTTP_CLIENT_ERROR,
    PERMANENT_ERROR,
    DeadLetter,
    dlq_headers,
    put_dead_letters,
    synthetic_letters,
)
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.settings import make_settings, worker_test_settings
from tests.support.worker import count_jobs, eventually, produce, running_worker

pytestmark = pytest.mark.integration


class SimulatedCrash(Exception):
    """Raised by the test hook between the broker's ack and the progress commit."""


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        max_attempts=2,
        retry_backoff_max_s=0.1,
        fetch_timeout_s=2.0,
        shutdown_timeout_s=5.0,
    )


async def copies(settings: Settings) -> list[ConsumerRecord]:
    """Records on the main topic that a redrive published."""
    records = await read_topic(settings, settings.images_topic)
    return [record for record in records if header(record, "redrive.dlq.offset") is not None]


def sources(records: list[ConsumerRecord]) -> collections.Counter[tuple[int, int]]:
    return collections.Counter(
        (int(header(r, "redrive.dlq.partition") or b""), int(header(r, "redrive.dlq.offset") or b"")) for r in records
    )


async def run_cli(settings: Settings, *argv: str) -> tuple[int, str]:
    """The redrive subcommand's own parser and run coroutine, in-process; returns (exit code, stdout)."""
    parser = argparse.ArgumentParser()
    redrive_cli.configure_parser(parser)
    args = parser.parse_args(argv)
    stdout = io.StringIO()
    original, sys.stdout = sys.stdout, stdout
    try:
        code: int = await args.run(settings, args)
    finally:
        sys.stdout = original
    return code, stdout.getvalue()


def replay_env(settings: Settings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "IMAGES_TOPIC": settings.images_topic,
        "DLQ_TOPIC": settings.dlq_topic,
        "CONSUMER_GROUP": settings.consumer_group,
        "DATABASE_URL": settings.database_url,
    }


async def image_replay(settings: Settings, *argv: str) -> tuple[int, str, str]:
    """The installed ``image-replay`` console script as a subprocess."""
    script = Path(sys.executable).parent / "image-replay"
    process = await asyncio.create_subprocess_exec(
        str(script),
        *argv,
        env={**os.environ, **replay_env(settings)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_fixed_dead_letters_are_redriven_and_done_once(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    """Dead letters of a cause that is then fixed go through on redrive; the other cause's stays for later."""
    settings = worker_settings
    late = [url_event(images.url(f"/late/{seed}.png")) for seed in range(5)]
    corrupt = url_event(images.url("/corrupt.png"))
    await produce(settings, [*map(as_record, late), as_record(corrupt)])

    async with running_worker(settings):
        await eventually(lambda: _jobs_in(jobs, JobStatus.FAILED, 6), what="all six jobs dead-lettered")
        assert len(await read_topic(settings, settings.dlq_topic)) == 6
        images.release_late()

        code, out = await run_cli(settings, "--execute", "--error-code", "http_4xx", "--json")
        assert code == 0
        report = json.loads(out)
        assert report["totals"]["redrive"] == 5
        assert report["by_error_code"]["corrupt_image"]["filtered_out"] == 1

        await eventually(lambda: _jobs_in(jobs, JobStatus.DONE, 5), what="redriven jobs done")
        assert [images.hits[f"/late/{seed}.png"] for seed in range(5)] == [2] * 5  # the failed try, the redriven one

        again = await redrive.redrive(settings, RedriveOptions(execute=True, error_codes=("http_4xx",)))
        assert again.total(redrive.Verdict.REDRIVE) == 0

    redriven = await copies(settings)
    assert len(redriven) == 5
    assert sorted(r.key for r in redriven) == sorted(str(e.image_id).encode() for e in late)
    for record in redriven:
        headers = dict(record.headers)
        assert headers["redrive.count"] == b"1"
        assert headers["content-type"] == b"application/json", "the original headers are kept"
        assert not [name for name in headers if name.startswith("dlq.")]
    assert sources(redriven).most_common(1)[0][1] == 1


async def test_interrupted_redrive_finishes_the_rest_with_none_twice(settings: Settings) -> None:
    letters = synthetic_letters(12)
    await put_dead_letters(settings, letters)
    calls = 0

    async def crash_on_second_batch() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SimulatedCrash

    with pytest.raises(SimulatedCrash):
        await redrive.redrive(
            settings, RedriveOptions(execute=True, batch_size=2), between_ack_and_commit=crash_on_second_batch
        )
    after_crash = await copies(settings)
    group_offsets = await committed_offsets(settings, f"{settings.consumer_group}.redrive", settings.dlq_topic)
    assert sum(c.offset for c in group_offsets.values()) < len(after_crash), "copies past the commit exist"

    partial = await redrive.redrive(settings, RedriveOptions(execute=True, batch_size=2, limit=3))
    assert partial.total(redrive.Verdict.REDRIVE) == 3

    rest = await redrive.redrive(settings, RedriveOptions(execute=True, batch_size=5))
    # The uncommitted copies of the crashed batch are met by one of the two runs (which one depends on how the
    # letters spread over the DLQ's partitions) and recognised instead of being sent again.
    recognised = partial.total(redrive.Verdict.ALREADY_REDRIVEN) + rest.total(redrive.Verdict.ALREADY_REDRIVEN)
    assert recognised == len(after_crash) - sum(c.offset for c in group_offsets.values())
    redriven = await copies(settings)
    assert len(redriven) == len(letters)
    assert set(sources(redriven).values()) == {1}, "each dead letter exactly once"
    assert sorted(r.value for r in redriven) == sorted(value for _, value, _ in letters)
    assert rest.total(redrive.Verdict.REDRIVE) == len(letters) - len(after_crash) - 3

    final = await redrive.redrive(settings, RedriveOptions(execute=True))
    assert final.examined == 0, "the progress group moved past every dead letter"


async def test_filters_select_and_dry_run_does_not_move_progress(settings: Settings) -> None:
    old = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    new = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    chosen = uuid.uuid4()
    letters: list[DeadLetter] = [
        (str(uuid.uuid4()).encode(), b"a", dlq_headers(HTTP_CLIENT_ERROR, old)),
        (str(uuid.uuid4()).encode(), b"b", dlq_headers(HTTP_CLIENT_ERROR, new)),
        (str(chosen).encode(), b"c", dlq_headers(PERMANENT_ERROR, new)),
        (str(uuid.uuid4()).encode(), b"d", dlq_headers(PERMANENT_ERROR, old)),
        (str(uuid.uuid4()).encode(), b"e", dlq_headers(HTTP_CLIENT_ERROR, new, redrives=3)),
    ]
    await put_dead_letters(settings, letters)

    code, out = await run_cli(settings)
    assert code == 0
    assert "WOULD REDRIVE" in out
    assert "http_4xx" in out, "letters written before error codes are counted by the code of their class"
    assert "dry run" in out

    code, out = await run_cli(settings, "--json")
    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["by_error_code"]["http_4xx"] == {
        "redrive": 2,
        "over_cap": 1,
        "filtered_out": 0,
        "already_redriven": 0,
    }
    assert report["by_error_code"]["unexpected"]["redrive"] == 2

    async def selected(*argv: str) -> int:
        code, out = await run_cli(settings, "--json", *argv)
        assert code == 0
        total: int = json.loads(out)["totals"]["redrive"]
        return total

    assert await selected("--error-code", "http_4xx") == 2
    assert await selected("--error-code", "http_4xx", "--error-code", "unexpected") == 4
    assert await selected("--error-code", "blocked_url") == 0
    assert await selected("--error-class", "PermanentError") == 2
    assert await selected("--error-class", "consumer.errors.PermanentError", "--error-class", "HttpClientError") == 4
    assert await selected("--error-class", "errors.PermanentError") == 0, "only the full or the short name"
    assert await selected("--since", "2026-02-01T00:00:00+00:00") == 2
    assert await selected("--until", "2026-02-01T00:00:00Z") == 2
    assert await selected("--image-id", str(chosen)) == 1
    assert await selected("--max-redrives", "4") == 5
    assert await selected("--limit", "3") == 3
    assert await copies(settings) == []
    group = f"{settings.consumer_group}.redrive"
    assert await committed_offsets(settings, group, settings.dlq_topic) == {}

    code, out = await run_cli(
        settings, "--execute", "--json", "--error-class", "PermanentError", "--since", "2026-02-01T00:00Z"
    )
    assert code == 0
    assert json.loads(out)["totals"]["redrive"] == 1
    assert [r.value for r in await copies(settings)] == [b"c"]

    # The filtered-out dead letters were not consumed: a redrive without filters still finds them.
    code, out = await run_cli(settings, "--execute", "--json")
    report = json.loads(out)
    assert report["totals"]["redrive"] == 3
    assert report["totals"]["over_cap"] == 1
    assert report["totals"]["filtered_out"] == 0
    assert sorted(r.value for r in await copies(settings)) == [b"a", b"b", b"c", b"d"]


async def test_the_redrive_cap_stops_a_loop(worker_settings: Settings, images: ImageServer, jobs: JobStore) -> None:
    """A dead letter whose cause is never fixed goes round at most --max-redrives times."""
    settings = worker_settings
    await produce(settings, [as_record(url_event(images.url("/late/1.png")))])
    async with running_worker(settings):
        for round_ in range(1, 4):
            await eventually(functools.partial(_dead_letter_count, settings, round_), what=f"dead letter {round_}")
            report = await redrive.redrive(settings, RedriveOptions(execute=True, max_redrives=2))
            if round_ <= 2:
                assert report.total(redrive.Verdict.REDRIVE) == 1
            else:
                assert report.total(redrive.Verdict.REDRIVE) == 0
                assert report.total(redrive.Verdict.OVER_CAP) == 1
    redriven = await copies(settings)
    assert sorted(header(r, "redrive.count") or b"" for r in redriven) == [b"1", b"2"]
    assert images.hits["/late/1.png"] == 3


async def test_usage_and_failures_exit_codes(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        await run_cli(settings, "--since", "2026-01-01T00:00:00")
    assert usage.value.code == 2
    assert "time zone" in capsys.readouterr().err

    code, _ = await run_cli(settings)  # the topics were never created
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "does not exist" in err
    assert "Traceback" not in err


async def test_console_script_dry_run_then_execute(settings: Settings) -> None:
    """The installed ``image-replay`` entry point, as an operator runs it."""
    await put_dead_letters(settings, synthetic_letters(4) + synthetic_letters(1, PERMANENT_ERROR))

    code, out, err = await image_replay(settings, "redrive")
    assert code == 0, err
    assert "http_4xx" in out
    assert "dry run" in out
    assert await copies(settings) == []

    code, out, err = await image_replay(settings, "redrive", "--execute", "--error-class", "HttpClientError", "--json")
    assert code == 0, err
    assert json.loads(out)["totals"]["redrive"] == 4
    assert len(await copies(settings)) == 4

    code, out, err = await image_replay(settings, "redrive", "--since", "yesterday")
    assert code == 2
    assert "not an ISO-8601 date-time" in err


def test_replay_main_in_process(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``image-replay``'s ``main`` with settings from the environment."""
    from scripts.replay import cli as replay

    settings = make_settings(kafka_bootstrap, tmp_path)
    asyncio.run(put_dead_letters(settings, synthetic_letters(3)))
    for name, value in replay_env(settings).items():
        monkeypatch.setenv(name, value)

    assert replay.main(["redrive", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["redrive"] == 3
    assert replay.main(["redrive", "--execute"]) == 0
    assert "REDRIVEN" in capsys.readouterr().out
    assert replay.main(["redrive", "--execute", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examined"] == 0


async def _jobs_in(jobs: JobStore, status: JobStatus, expected: int) -> bool:
    return await count_jobs(jobs, status) == expected


async def _dead_letter_count(settings: Settings, expected: int) -> bool:
    return len(await read_topic(settings, settings.dlq_topic)) >= expected


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_stays_quiet_in_logs() -> None:
    terminal = _Terminal()
    progress = redrive_cli.Progress(2000, terminal)
    progress.update(500, 400)
    progress.update(2000, 1500)
    progress.close()
    assert terminal.getvalue() == (
        "\rexamined 500/2000 dead letters, redriven 400\rexamined 2000/2000 dead letters, redriven 1500\n"
    )

    log = io.StringIO()
    quiet = redrive_cli.Progress(2000, log)
    quiet.update(500, 400)
    quiet.close()
    assert log.getvalue() == "", "plain lines only every few seconds, so short runs print none"
