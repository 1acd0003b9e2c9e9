"""What every measurement is handed: the broker, a scratch folder, the sizes, and fresh settings on demand."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.schema import upgrade_sqlite
from core.settings import Settings


class BenchError(Exception):
    """A measurement could not be made (a process did not start, jobs did not finish in time); says which."""


@dataclass(frozen=True, slots=True)
class Context:
    """One run of one comparison. ``quick`` asks for tiny sizes: a smoke test of the bench, not figures."""

    bootstrap_servers: str
    scratch: Path
    quick: bool
    run: int  # counts from 1
    runs: int
    progress: Callable[[str], None]

    def fresh_settings(self, label: str, **overrides: Any) -> Settings:
        """Settings with a topic, group, database (migrated) and blob folder no other measurement has used."""
        suffix = uuid.uuid4().hex[:8]
        folder = self.scratch / f"{label}-{suffix}"
        folder.mkdir(parents=True)
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap_servers,
            "images_topic": f"bench-{label}-{suffix}",
            "dlq_topic": f"bench-{label}-{suffix}.dlq",
            "consumer_group": f"bench-{label}-{suffix}",
            "database_url": f"sqlite:///{folder / 'jobs.db'}",  # migrated below, as image-migrate would
            "storage_dir": folder / "blobs",
            "auth_disabled": True,  # the bench measures the pipeline, not key look-ups
        }
        upgrade_sqlite(folder / "jobs.db")
        return Settings(**(values | overrides))

    def folder(self, settings: Settings) -> Path:
        """The measurement's own folder (logs go there too)."""
        return settings.storage_dir.parent

    def say(self, name: str, message: str) -> None:
        """One progress line, tagged with the comparison and the run."""
        self.progress(f"[{name} {self.run}/{self.runs}] {message}")


def print_progress(line: str) -> None:
    """Progress goes to stderr, so stdout holds only the table."""
    print(line, file=sys.stderr, flush=True)
