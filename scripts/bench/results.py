"""What a comparison declares (figures, baselines, goals) and what it measured (one sample per run)."""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scripts.bench.context import Context
from scripts.bench.stats import paired_ratio

_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """One measured quantity; ``baselines`` name the figures (of the same comparison) it is divided by."""

    name: str
    unit: str
    baselines: tuple[str, ...] = ()
    higher_is_better: bool = True


@dataclass(frozen=True, slots=True)
class Goal:
    """A target the issue set: ``figure`` (divided by ``baseline`` when given) ``op`` ``threshold``."""

    text: str
    figure: str
    op: Literal[">=", "<", "<="]
    threshold: float
    baseline: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a comparison will measure at the chosen size: figures, goals, the settings it uses, fixed notes."""

    figures: tuple[FigureSpec, ...]
    goals: tuple[Goal, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Run:
    """One run's value of every planned figure, and what it noticed on the way (errors, the load's CPU)."""

    values: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A comparison the CLI can run: its plan for a size (``quick`` or not) and one run's measurement."""

    name: str
    title: str
    plan: Callable[[bool], Plan]
    measure: Callable[[Context], Coroutine[Any, Any, Run]]
    uvloop: bool = False  # run on uvloop, as uvicorn runs image-api (image-worker runs on asyncio's own loop)


@dataclass(frozen=True, slots=True)
class Figure:
    """A figure's samples (one per run), its median and its ratios against each baseline."""

    spec: FigureSpec
    samples: tuple[float, ...]
    ratios: Mapping[str, float | None]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(slots=True)
class Comparison:
    """The outcome of one comparison: figures with their ratios, goals, the settings used, notes."""

    name: str
    title: str
    figures: list[Figure]
    goals: list[tuple[Goal, float | None, bool | None]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def figure(self, name: str) -> Figure:
        for figure in self.figures:
            if figure.spec.name == name:
                return figure
        raise KeyError(name)


def build_comparison(
    name: str, title: str, plan: Plan, runs: Sequence[Mapping[str, float]], notes: list[str]
) -> Comparison:
    """Turn per-run samples into figures with paired ratios and evaluate the goals.

    Every planned figure must be in every run: a comparison that lost a figure has failed, not measured 0.
    """
    samples = {spec.name: tuple(run[spec.name] for run in runs) for spec in plan.figures}
    figures = [
        Figure(spec, samples[spec.name], {b: paired_ratio(samples[spec.name], samples[b]) for b in spec.baselines})
        for spec in plan.figures
    ]
    by_name = {figure.spec.name: figure for figure in figures}
    evaluated: list[tuple[Goal, float | None, bool | None]] = []
    for goal in plan.goals:
        figure = by_name[goal.figure]
        value = figure.median if goal.baseline is None else figure.ratios.get(goal.baseline)
        met = None if value is None else _OPERATORS[goal.op](value, goal.threshold)
        evaluated.append((goal, value, met))
    return Comparison(name, title, figures, evaluated, dict(plan.settings), [*plan.notes, *notes])


def failed_comparison(name: str, title: str, plan: Plan, error: str, notes: list[str]) -> Comparison:
    """A comparison that could not be measured: no figures, the error says why."""
    return Comparison(name, title, [], [], dict(plan.settings), [*plan.notes, *notes], error=error)
