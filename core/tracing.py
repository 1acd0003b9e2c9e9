"""Tracing across Kafka: one trace from an upload's request to its job's end, in the W3C trace context.

The API's request span (FastAPI's own telemetry) is the parent of a producer span whose context travels in the
event's ``traceparent``/``tracestate`` headers; a worker's consumer span continues that trace, with child spans for
the download, the filter, the store and the end of the job, and SQLAlchemy's instrumentation adds the statements.
A dead letter keeps the original headers, and a redrive's producer span links back to the trace of each dead
letter it copies, while the copies carry the redrive's own context.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: spans then go out
over OTLP/HTTP, configured by the standard ``OTEL_*`` variables. While no tracer provider is installed, each helper
here returns before touching OpenTelemetry, so the accept path pays nothing for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from core import log_context
from core.settings import Settings
from schemas import TraceHeader

Headers = list[tuple[str, bytes]]

_TRACER = trace.get_tracer("image_pipeline")  # a proxy: it follows whichever provider is installed later
_TRACE_HEADERS = frozenset(header.value for header in TraceHeader)
_installed = False


def start(settings: Settings, service_name: str) -> bool:
    """Install an OTLP-exporting tracer provider for this process when the settings switch tracing on; returns
    whether they did. Call once per process, before building the app or the worker (a forked or spawned serving
    process calls it again for itself). Spans still buffered are flushed when the process exits."""
    if not settings.tracing_enabled:
        return False
    # Imported only when tracing is on: the SDK and the exporter are not needed otherwise.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: settings.otel_service_name or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def install(provider: trace.TracerProvider) -> None:
    """Make ``provider`` this process's tracer provider, and trace the SQL of the engines created from now on."""
    global _installed
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    trace.set_tracer_provider(provider)
    # Its declared range ends before SQLAlchemy 2.1, whose engine events it hooks are unchanged; the tracing test
    # checks that the worker's statements are spans of their job.
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _installed = True


def enabled() -> bool:
    """Whether spans are recorded in this process: a provider was installed here or by an OpenTelemetry agent."""
    return _installed or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


@contextlib.contextmanager
def producing(
    topic: str, *, key: bytes | None = None, count: int = 1, links: Sequence[Link] = (), name: str | None = None
) -> Iterator[Headers]:
    """A producer span (``send <topic>`` unless ``name`` says otherwise) around appending ``count`` records to
    ``topic`` until the broker acked them; yields the trace headers to add to each record, none when tracing is
    off."""
    if not enabled():
        yield []
        return
    attributes = _messaging_attributes("send", topic, key)
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    span_name = name or f"send {topic}"
    with _TRACER.start_as_current_span(span_name, kind=SpanKind.PRODUCER, attributes=attributes, links=links):
        yield trace_headers()


@contextlib.contextmanager
def consuming(
    topic: str, partition: int, offset: int, key: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> Iterator[None]:
    """A consumer span around processing one record, continuing the trace its headers carry; the job's log lines
    name the trace (:mod:`core.log_context`)."""
    if not enabled():
        yield
        return
    attributes = _messaging_attributes("process", topic, key)
    attributes |= {"messaging.destination.partition.id": str(partition), "messaging.kafka.offset": offset}
    parent = context_of(headers)
    with _TRACER.start_as_current_span(
        f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        log_context.name_trace(trace.format_trace_id(span.get_span_context().trace_id))
        yield


def step(name: str) -> contextlib.AbstractContextManager[object]:
    """A child span for one step of the current job (download, filter, store, ...); nothing when tracing is off."""
    if not enabled():
        return contextlib.nullcontext()
    return _TRACER.start_as_current_span(name)


def annotate(attributes: Mapping[str, str | int]) -> None:
    """Set attributes on the current span (the job's outcome, say); nothing when tracing is off."""
    if enabled():
        trace.get_current_span().set_attributes(attributes)


def fail(description: str) -> None:
    """Mark the current span failed, e.g. a record given up on without an exception escaping its span."""
    if enabled():
        trace.get_current_span().set_status(Status(StatusCode.ERROR, description))


def trace_headers() -> Headers:
    """The current span's context as record headers (``traceparent``, ``tracestate`` if any); none when off."""
    if not enabled():
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items() if name in _TRACE_HEADERS]


def with_trace_headers(headers: Iterable[tuple[str, bytes]], replacement: Headers) -> Headers:
    """``headers`` with their trace context replaced by ``replacement`` (kept as they are when it is empty)."""
    if not replacement:
        return list(headers)
    return [*((name, value) for name, value in headers if name not in _TRACE_HEADERS), *replacement]


def context_of(headers: Iterable[tuple[str, bytes]]) -> otel_context.Context:
    """The trace context a record's headers carry (an empty context when they carry none or a malformed one)."""
    return propagate.extract(list(headers), getter=_RecordHeaders())


def links_to(records_headers: Iterable[Iterable[tuple[str, bytes]]]) -> list[Link]:
    """Links to the spans whose context each record's headers carry (records without one are left out)."""
    links = []
    for headers in records_headers:
        span_context = trace.get_current_span(context_of(headers)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links


def _messaging_attributes(operation: str, topic: str, key: bytes | None) -> dict[str, str | int]:
    """OpenTelemetry's messaging attributes of a Kafka ``operation`` (send, process) on ``topic``."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode(errors="replace")
    return attributes


class _RecordHeaders(Getter[list[tuple[str, bytes]]]):
    """Reads Kafka record headers (name, bytes) for the propagators; the last of a repeated name wins."""

    def get(self, carrier: list[tuple[str, bytes]], key: str) -> list[str] | None:
        found = [value for name, value in carrier if name == key]
        return [found[-1].decode(errors="replace")] if found else None

    def keys(self, carrier: list[tuple[str, bytes]]) -> list[str]:
        return [name for name, _ in carrier]
