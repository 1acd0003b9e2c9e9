"""The Grafana dashboard and the Prometheus rules in deploy/ name only metrics the API and the workers export, and
have the shapes Grafana and Prometheus load."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumer.metrics import WorkerMetrics
from producer.metrics import ApiMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "image-pipeline.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

# What Prometheus itself makes of every scrape target.
PROMETHEUS_OWN = frozenset({"up"})
# The series names prometheus_client exposes per metric type.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
# PromQL words that look like names: operators, modifiers and the grouping keywords.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf"}
)
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLES = re.compile(r"\$\w+")
# A name not preceded by a word character or a dot (so not inside 0.99 or 1e3) and not called (so not a function).
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, ranges,
    groupings, Grafana variables, function calls, numbers and keywords are taken out."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPINGS, _VARIABLES):
        expression = pattern.sub(" ", expression)
    return {name for name in _NAME.findall(expression) if name not in KEYWORDS}


def exported(registry: CollectorRegistry) -> set[str]:
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


EXPORTED = exported(ApiMetrics().registry) | exported(WorkerMetrics().registry)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def graph_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in graph_panels() for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_the_name_parser_finds_metrics_and_nothing_else() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le, route) (rate(image_api_request_seconds_bucket{route=~"/x.*"}'
        "[$__rate_interval]))) / on (instance) group_left count(up{job='a'} == 1) > 1e3 "
        "and deriv(sum without (partition) (image_worker_consumer_lag)[15m:1m]) > bool 0"
    )
    assert metric_names(expression) == {"image_api_request_seconds_bucket", "up", "image_worker_consumer_lag"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_named_is_exported(source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else [rule["expr"] for rule in alert_rules()]
    assert expressions
    for expression in expressions:
        names = metric_names(expression)
        assert names, f"no metric in {expression!r}"
        unknown = names - EXPORTED - PROMETHEUS_OWN
        assert not unknown, f"{expression!r} names {sorted(unknown)}, which neither the API nor a worker exports"


def test_the_dashboard_shows_every_metric_exported() -> None:
    shown = {name for expression in dashboard_expressions() for name in metric_names(expression)}
    families = {name.removesuffix(suffix) for name in shown for suffix in ("_total", "_bucket", "_sum", "_count")}
    for registry in (ApiMetrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            assert family.name in families | shown, f"{family.name} is on no panel"


def test_the_dashboard_has_grafanas_shape() -> None:
    board = dashboard()
    assert board["title"]
    assert board["uid"]
    assert isinstance(board["schemaVersion"], int)
    assert [variable["type"] for variable in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        position = panel["gridPos"]
        assert all(isinstance(position[key], int) for key in ("h", "w", "x", "y")), panel["title"]
        assert position["x"] + position["w"] <= 24, panel["title"]
    for panel in graph_panels():
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["title"]
        assert panel["datasource"]["type"] == "prometheus"
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        assert len({target["refId"] for target in targets}) == len(targets)
        assert all(target["expr"].strip() for target in targets)


def test_the_alerts_load_and_cover_lag_dead_letters_and_liveness() -> None:
    rules = alert_rules()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    watched = {rule["alert"]: rule["expr"] for rule in rules}
    assert "image_worker_consumer_lag" in watched["ImageWorkersLagGrowing"]
    assert 'outcome="dead_lettered"' in watched["ImageWorkersDeadLettering"]
    assert "image_worker_alive" in watched["ImageWorkerNotAlive"]


def test_the_alerts_name_the_jobs_prometheus_yml_scrapes() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [(PROMETHEUS.parent / path).is_file() for path in config["rule_files"]] == [True]
    jobs = {scrape["job_name"] for scrape in config["scrape_configs"]}
    named = {job for rule in alert_rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    named |= {job for expression in dashboard_expressions() for job in re.findall(r'job="([^"]+)"', expression)}
    assert named
    assert named <= jobs
