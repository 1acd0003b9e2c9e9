"""Scenario 11: schemathesis fuzzes the served OpenAPI schema; every answer is one the schema documents.

The real app (``create_app`` with its lifespan, a real broker) is driven in-process by schemathesis' own engine,
the one ``st run`` uses, through its ASGI transport: every phase (examples, coverage, fuzzing, stateful), every
check (no 5xx, status codes, content types, headers and bodies as documented, schema-valid requests accepted,
schema-violating ones rejected, unsupported methods refused, a response time limit), positive and negative
data, NUL bytes and odd strings included, from a fixed seed. One check is off: use-after-free expects a 404 for
what a DELETE answered 2xx, and ``DELETE /images/{id}`` cancels a job, which stays readable as ``cancelled``.

The upload's ``file`` part is ``format: binary``, and no JSON Schema says "an image": schemathesis is taught
what a valid file is (small real images in the accepted formats), so positive cases upload images and expect a
202, while negative cases (whose file is anything else) are still checked to get a 4xx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.engine import StopReason, events, from_schema
from schemathesis.engine.statistic import Statistic
from schemathesis.python import asgi
from schemathesis.specs.openapi.formats import unregister_string_format

from core.imaging import ALLOWED_IMAGE_FORMATS
from producer.app import create_app
from tests.reliability.harness import FIGURES, Scale
from tests.support.images import encoded
from tests.support.settings import make_settings

SEED = 20261127
# Any 5xx fails the run, the documented 503 included (a database or blob-store error is mapped to 503 too, and
# must not hide there): the broker gets a generous ack deadline so a slow CI machine does not turn into a 503.
SEND_TIMEOUT_S = 10.0
RESPONSE_TIME_LIMIT_S = 15.0  # the API answers within SEND_TIMEOUT_S, whatever it is sent: never a hang
REQUEST_TIMEOUT_S = 30.0
MAX_IMAGE_SIDE = 12
UPLOAD = "POST /images multipart/form-data"


@st.composite
def valid_images(draw: st.DrawFn) -> bytes:
    """A small real image in one of the formats the API accepts (what a schema-valid ``file`` part is)."""
    width, height = draw(st.integers(1, MAX_IMAGE_SIDE)), draw(st.integers(1, MAX_IMAGE_SIDE))
    pixels = draw(st.binary(min_size=width * height * 3, max_size=width * height * 3))
    image_format = draw(st.sampled_from(ALLOWED_IMAGE_FORMATS))
    return encoded(Image.frombytes("RGB", (width, height), pixels), image_format)


@contextlib.contextmanager
def binary_parts_are_images() -> Iterator[None]:
    """Generate schema-valid ``format: binary`` values as images for as long as the block runs."""
    schemathesis.openapi.format("binary", valid_images())
    try:
        yield
    finally:
        unregister_string_format("binary")  # back to schemathesis' built-in binary generator


@dataclasses.dataclass
class FuzzRun:
    statistic: Statistic
    cases_by_phase: Counter[str]
    answers: Counter[tuple[str, str, int]]  # (phase, operation, status code) -> responses
    errors: list[str]
    stop_reason: StopReason | None
    run_s: float

    def failures(self) -> list[str]:
        """Every distinct failure with the curl command that reproduces it."""
        return [
            f"{label}: {failure.title}: {failure.message}\n{group.code_sample}"
            for label, grouped in self.statistic.failures.items()
            for group in grouped.values()
            for failure in group.failures
        ]

    def status_classes(self) -> str:
        classes: Counter[str] = Counter()
        for (_phase, _operation, status_code), count in self.answers.items():
            classes[f"{status_code // 100}xx"] += count
        return ",".join(f"{name}:{count}" for name, count in sorted(classes.items()))

    def answered(self, phase: str, operation: str, status_code: int) -> int:
        return self.answers[phase, operation, status_code]

    def line(self) -> str:
        statistic = self.statistic
        phases = " ".join(f"{phase}={count}" for phase, count in self.cases_by_phase.items())
        return (
            f"api-fuzz: operations={len(statistic.tested_operations)} cases={statistic.total_cases} ({phases}) "
            f"failures={statistic.total_failures} errored_cases={statistic.errored_cases} errors={len(self.errors)} "
            f"answers={self.status_classes()} seed={SEED} run_s={self.run_s:.1f}"
        )


def run_schemathesis(config: dict[str, Any], app: Any) -> FuzzRun:
    """Run every phase of schemathesis against ``app`` in-process (its lifespan runs in schemathesis' loop)."""
    started = time.monotonic()
    statistic = Statistic()
    cases_by_phase: Counter[str] = Counter()
    answers: Counter[tuple[str, str, int]] = Counter()
    errors: list[str] = []
    stop_reason = None
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(config))
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
                statistic.on_scenario_finished(event.recorder)
                cases_by_phase[event.phase.value] += len(event.recorder.cases)
                for case_id, node in event.recorder.cases.items():
                    interaction = event.recorder.interactions.get(case_id)
                    if interaction is not None and interaction.response is not None:
                        operation = node.value.operation.label
                        if node.value.media_type:
                            operation += f" {node.value.media_type}"
                        answers[event.phase.value, operation, interaction.response.status_code] += 1
            elif isinstance(event, events.NonFatalError):
                errors.append(f"{event.label}: {event.info.format()}")
            elif isinstance(event, events.FatalError):
                errors.append(f"fatal: {event.exception!r}")
            elif isinstance(event, events.EngineFinished):
                stop_reason = event.stop_reason
    finally:
        asgi.shutdown_lifespans()  # stops the app's publisher and database engine
    return FuzzRun(statistic, cases_by_phase, answers, errors, stop_reason, time.monotonic() - started)


# Hypothesis warns when it describes a generated case of hundreds of kB (a multipart upload can be one); under
# filterwarnings=error that warning, about its own bookkeeping, was reported as an error of the API.
@pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")
@pytest.mark.timeout(1800)  # for the long form (about 10 min); the short one takes about 30 s on 2 idle cores
def test_fuzzing_the_openapi_schema_finds_no_failure(kafka_bootstrap: str, tmp_path: Path, scale: Scale) -> None:
    # Keys are off here, so a callback is signed with CALLBACK_SECRET: without it every schema-valid callback_url
    # would be a (documented) 422 that only a setting decides and no schema can say.
    settings = make_settings(kafka_bootstrap, tmp_path, send_timeout_s=SEND_TIMEOUT_S, callback_secret="whsec_fuzz")
    app = create_app(settings)
    config = {
        "seed": SEED,
        "generation": {
            "mode": "all",  # positive and negative data
            "max-examples": scale.pick(300, 1000),  # per operation and phase
            "allow-x00": True,
            "database": "none",  # the seed alone decides the cases: no replay of a previous run's failures
        },
        "checks": {
            "enabled": True,
            "max_response_time": RESPONSE_TIME_LIMIT_S,
            "use_after_free": {"enabled": False},  # a cancelled job is still there (see the module's docstring)
        },
        "request-timeout": REQUEST_TIMEOUT_S,  # a hung request becomes an errored case, not a hung test
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {
                "enabled": True,
                "max-steps": scale.pick(10, 20),
                "generation": {"max-examples": scale.pick(60, 300)},  # scenarios (chains of requests)
            },
        },
    }
    with binary_parts_are_images():
        run = run_schemathesis(config, app)

    line = run.line()
    FIGURES.append(line)
    failures = "\n\n".join(run.failures())
    assert run.stop_reason is StopReason.COMPLETED, line
    assert not run.errors, f"{line}\n" + "\n".join(run.errors)
    failure_count, errored_cases = run.statistic.total_failures, run.statistic.errored_cases
    assert failure_count == 0, f"{line}\n{failures}"
    assert errored_cases == 0, line
    assert set(run.cases_by_phase) == {"examples", "coverage", "fuzzing", "stateful"}, line
    operations = sum(len(methods) for methods in app.openapi()["paths"].values())
    assert len(run.statistic.tested_operations) == operations, line
    assert not [key for key in run.answers if key[2] >= 500], line
    # Positive uploads were images and accepted; negative ones (anything else in the file part) were refused.
    assert sum(run.answered(phase, UPLOAD, 202) for phase in run.cases_by_phase) > 0, run.answers
    assert sum(run.answered(phase, UPLOAD, 422) for phase in run.cases_by_phase) > 0, run.answers
    # The stateful phase followed POST /images to the job it created: its status, and its result while not done.
    assert run.answered("stateful", "GET /images/{image_id}", 200) > 0, run.answers
    assert run.answered("stateful", "GET /images/{image_id}/result", 409) > 0, run.answers
    assert run.answered("stateful", "DELETE /images/{image_id}", 200) > 0, run.answers  # and cancelled one
