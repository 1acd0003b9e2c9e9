"""Logging set-up for the entry points (only they configure logging), and Kafka outages at a bounded rate.

While a broker is away, aiokafka logs every failed attempt: dozens of lines a second from a worker, hundreds
in ten seconds from the API. :class:`OutageReport` turns that into a report: the first line of an outage is
logged as its start, later ones are counted and summed up at most once per interval, and one line says when
it is over (nothing more for an interval). The project's own lines about the same trouble join the report by
passing ``extra=KAFKA_TROUBLE``.

``LOG_FORMAT=json`` makes each line one JSON object (``time``, ``level``, ``logger``, ``message``, ``exception``
when there is one, and the fields of :mod:`core.log_context` on a job's lines), for a log store to index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from core.log_context import JobFieldsFilter

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KAFKA_TROUBLE: Final = {"kafka_trouble": True}
REPORT_INTERVAL_S: Final = 10.0
LogFormat = Literal["text", "json"]
# The attributes every JSON line has, under the names a log store expects; the rest of a record's attributes (the
# job fields, ``extra=``) become fields of their own.
JSON_FIELDS: Final = ("levelname", "name", "message")
JSON_RENAMES: Final = {"levelname": "level", "name": "logger", "exc_info": "exception", "stack_info": "stack"}
# uvicorn's ANSI-coloured copy of its message, and our outage marker: noise in a JSON line.
JSON_HIDDEN: Final = (*RESERVED_ATTRS, "color_message", *KAFKA_TROUBLE)

logger = logging.getLogger(__name__)


def configure_logging(level: str, *, log_format: LogFormat = "text", quiet_kafka: bool = False) -> OutageReport:
    """Log to stderr at ``level`` as ``log_format``; Kafka trouble goes through one :class:`OutageReport`, which is
    returned.

    ``quiet_kafka`` drops aiokafka's lines below CRITICAL altogether: for commands that print their own
    one-line error.
    """
    logging.basicConfig(level=level.upper(), format=FORMAT)
    report = OutageReport()
    for handler in logging.getLogger().handlers:
        handler.addFilter(report)
        handler.addFilter(JobFieldsFilter())
        if log_format == "json":
            handler.setFormatter(json_formatter())
    # httpx logs every request's full URL at INFO, query string included; the worker's own job line says what
    # matters, without secrets (core/urls.py).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic names its dialect at INFO on every start's schema check; image-migrate prints its own summary.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if quiet_kafka and logging.getLogger().level > logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return report


def json_formatter() -> logging.Formatter:
    """One JSON object per line; ``time`` is ISO 8601 in UTC, whatever the host's time zone."""
    return JsonFormatter(list(JSON_FIELDS), rename_fields=JSON_RENAMES, reserved_attrs=JSON_HIDDEN, timestamp="time")


class OutageReport(logging.Filter):
    """Collapses warnings and errors about Kafka into: outage begins, a count per interval, outage over."""

    def __init__(
        self,
        interval_s: float = REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        watch: bool = True,
    ) -> None:
        """With ``watch``, a daemon thread calls :meth:`over` during an outage; without, the caller does."""
        super().__init__()
        self._watch = watch
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._began: float | None = None  # when the current outage's first line came
        self._last_seen = 0.0
        self._last_shown = 0.0
        self._hidden = 0  # lines held back since the last one shown
        self._total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _is_kafka_trouble(record):
            return True
        with self._lock:
            now = self._clock()
            self._last_seen = now
            self._total += 1
            if self._began is None:
                self._began, self._last_shown, self._hidden = now, now, 0
                _rewrite(record, f"Kafka unavailable: {{}}; similar lines are summed up every {self.interval_s:g} s")
                if self._watch:
                    self._watch_for_the_end()
                return True
            if now - self._last_shown < self.interval_s:
                self._hidden += 1
                return False
            lasted_s = now - self._began
            _rewrite(record, f"Kafka still unavailable after {lasted_s:.0f} s ({self._hidden} lines held back): {{}}")
            self._last_shown, self._hidden = now, 0
            return True

    def over(self) -> bool:
        """End the current outage if Kafka has been quiet for an interval; say so once. True when none is open."""
        with self._lock:
            if self._began is None:
                return True
            now = self._clock()
            if now - self._last_seen < self.interval_s:
                return False
            lasted_s, total = self._last_seen - self._began, self._total
            self._began, self._total = None, 0
        logger.warning("Kafka available again: the trouble lasted %.0f s (%d lines)", lasted_s, total)
        return True

    def _watch_for_the_end(self) -> None:
        def watch() -> None:
            while not self.over():
                time.sleep(self.interval_s / 4)

        threading.Thread(target=watch, name="kafka outage report", daemon=True).start()


def _is_kafka_trouble(record: logging.LogRecord) -> bool:
    return record.name.startswith("aiokafka") or getattr(record, "kafka_trouble", False)


def _rewrite(record: logging.LogRecord, template: str) -> None:
    record.msg = template.replace("{}", record.getMessage())
    record.args = None
