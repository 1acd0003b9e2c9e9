"""The benchmark's pure parts: statistics, ratios and goals, the report's shape, the load generator's arguments.

The measurements themselves need a broker and minutes of CPU: they are run by ``python -m scripts.bench``,
never by the test suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import cli, report
from scripts.bench.loadgen import LoadReport, LoadSpec, Sample, parse_args, summarise
from scripts.bench.results import FigureSpec, Goal, Plan, build_comparison, failed_comparison
from scripts.bench.stats import latency_summary_ms, paired_ratio, percentile, ratio


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_refuses_what_has_no_answer(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, q)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary_ms([0.001 * n for n in range(1, 101)])
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == pytest.approx(100.0)
    assert latency_summary_ms([])["count"] == 0


def test_ratios_pair_runs_and_survive_a_zero_baseline() -> None:
    assert ratio(5.0, 10.0) == 0.5
    assert ratio(5.0, 0.0) is None
    # Run 2 was slow for both figures: pairing keeps the ratio at 0.5 where medians alone would not.
    assert paired_ratio([50.0, 10.0, 52.0], [100.0, 20.0, 104.0]) == pytest.approx(0.5)
    assert paired_ratio([1.0], [0.0]) is None
    with pytest.raises(ValueError, match="baselines"):
        paired_ratio([1.0, 2.0], [1.0])


def _plan() -> Plan:
    return Plan(
        figures=(
            FigureSpec("limit req/s", "req/s"),
            FigureSpec("ours req/s", "req/s", ("limit req/s",)),
            FigureSpec("ours p99", "ms", higher_is_better=False),
        ),
        goals=(
            Goal("ours >= 0.7 of the limit", "ours req/s", ">=", 0.7, baseline="limit req/s"),
            Goal("p99 < 50 ms", "ours p99", "<", 50.0),
        ),
        settings={"connections": 8},
        notes=("a fixed note",),
    )


def _runs() -> list[dict[str, float]]:
    return [
        {"limit req/s": 100.0, "ours req/s": 80.0, "ours p99": 40.0},
        {"limit req/s": 50.0, "ours req/s": 30.0, "ours p99": 70.0},
        {"limit req/s": 100.0, "ours req/s": 90.0, "ours p99": 45.0},
    ]


def test_comparison_has_medians_ratios_and_goals() -> None:
    comparison = build_comparison("demo", "a demo", _plan(), _runs(), ["run 1: a note"])
    ours = comparison.figure("ours req/s")
    assert ours.median == 80.0
    assert ours.samples == (80.0, 30.0, 90.0)
    assert ours.ratios == {"limit req/s": pytest.approx(0.8)}
    assert comparison.figure("limit req/s").ratios == {}
    [(_, throughput, throughput_met), (_, p99, p99_met)] = comparison.goals
    assert throughput == pytest.approx(0.8)
    assert throughput_met is True
    assert (p99, p99_met) == (45.0, True)
    assert comparison.notes == ["a fixed note", "run 1: a note"]


def test_a_run_missing_a_figure_is_an_error_not_a_zero() -> None:
    with pytest.raises(KeyError):
        build_comparison("demo", "a demo", _plan(), [{"limit req/s": 1.0}], [])


def test_report_document_records_machine_versions_runs_settings_and_samples() -> None:
    comparisons = [
        build_comparison("demo", "a demo", _plan(), _runs(), []),
        failed_comparison("broken", "never measured", Plan(figures=()), "run 1: BenchError: no broker", []),
    ]
    doc = report.document(
        comparisons,
        machine={"cpu_count": 2},
        versions={"python": "3.11", "kafka_broker": "4.1.1"},
        runs=3,
        quick=False,
        command=["python", "-m", "scripts.bench"],
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:05:00+00:00",
    )
    doc = json.loads(json.dumps(doc))  # it must survive JSON as it is
    assert {"machine", "versions", "runs", "quick", "command", "comparisons", "schema_version"} <= set(doc)
    demo, broken = doc["comparisons"]
    assert demo["settings"] == {"connections": 8}
    assert demo["error"] is None
    figure = demo["figures"][1]
    assert figure == {
        "name": "ours req/s",
        "unit": "req/s",
        "higher_is_better": True,
        "median": 80.0,
        "samples": [80.0, 30.0, 90.0],
        "ratios": {"limit req/s": pytest.approx(0.8)},
    }
    assert demo["goals"][0]["met"] is True
    assert broken["error"] == "run 1: BenchError: no broker"
    assert broken["figures"] == []


def test_table_shows_each_ratio_and_goal() -> None:
    comparisons = [build_comparison("demo", "a demo", _plan(), _runs(), [])]
    text = report.table(comparisons, runs=3)
    assert "== demo: a demo (median of 3 run(s)) ==" in text
    assert "0.80x limit req/s" in text
    assert "(baseline)" in text
    assert "goal: ours >= 0.7 of the limit: 0.80x -> met" in text


def test_json_is_written(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    report.write_json({"runs": 1}, path)
    assert json.loads(path.read_text()) == {"runs": 1}


def test_loadgen_defaults_to_a_closed_loop() -> None:
    spec = parse_args(["http://127.0.0.1:8000/images"])
    assert spec == LoadSpec("http://127.0.0.1:8000/images")
    assert spec.rate_per_s is None
    assert spec.body == "json"


def test_loadgen_arguments_round_trip() -> None:
    spec = LoadSpec(
        "http://127.0.0.1:1/images",
        connections=4,
        duration_s=2.5,
        warmup_s=0.0,
        rate_per_s=12.5,
        body="upload",
        filter="blur",
        upload_px=32,
        record_ids=True,
    )
    assert parse_args(spec.argv()) == spec


@pytest.mark.parametrize(
    "extra", [["--connections", "0"], ["--duration-s", "0"], ["--rate", "-1"], ["--warmup-s", "-1"], ["--body", "xml"]]
)
def test_loadgen_refuses_bad_arguments(extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["http://127.0.0.1:8000/images", *extra])
    assert exit_info.value.code == 2


def test_loadgen_summary_counts_only_the_window() -> None:
    spec = LoadSpec("http://x/images", rate_per_s=10.0, record_ids=True)
    samples = [
        Sample(0.5, 0.6, 202, "warm-up"),  # due before the window
        Sample(1.0, 1.02, 202, "a"),
        Sample(1.5, 1.53, 503),
        Sample(2.0, 2.04, 202, "b"),
        Sample(2.5, 9.0, "unanswered"),
        Sample(3.5, 3.6, 202, "after"),  # due after the window
    ]
    summary = summarise(samples, spec, window=(1.0, 3.0), wall_offset_s=100.0, cpu_share=0.25)
    assert summary.mode == "open"
    assert summary.ok == 2
    assert summary.errors == {"503": 1, "unanswered": 1}
    assert summary.throughput_per_s == pytest.approx(1.0)
    assert summary.latency_ms["max"] == pytest.approx(40.0)
    assert [(image_id, due) for image_id, due, _ in summary.ids] == [("a", 101.0), ("b", 102.0)]
    assert LoadReport.from_json(summary.to_json()) == summary


def test_closed_loop_summary_counts_answers_inside_the_window() -> None:
    spec = LoadSpec("http://x/images")
    samples = [Sample(0.9, 1.1, 202), Sample(0.5, 0.95, 202), Sample(2.9, 3.1, 202)]
    summary = summarise(samples, spec, window=(1.0, 3.0), wall_offset_s=0.0, cpu_share=0.0)
    assert (summary.mode, summary.ok, summary.ids) == ("closed", 1, [])


def test_cli_options() -> None:
    args = cli.parse_args(["--only", "accept", "worker", "--runs", "1", "--quick", "--out", "somewhere"])
    assert (args.only, args.runs, args.quick, args.out) == (["accept", "worker"], 1, True, Path("somewhere"))
    assert cli.parse_args([]).runs == 3
    assert cli.parse_args([]).out == Path("bench-results")
    assert set(cli.BENCHMARKS) == {"accept", "worker", "concurrency", "scale_out", "end_to_end", "console"}
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "nothing"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--runs", "0"])
