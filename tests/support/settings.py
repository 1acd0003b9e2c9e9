"""Settings for tests: topics, group, database and blobs of their own; fast retries and commits for workers."""

from __future__ import annotations

import uuid
from pathlib import Path

from core.settings import Settings
from tests.support.database import migrated_sqlite


def make_settings(bootstrap_servers: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings with topics of their own, so tests never see each other's records, and a migrated SQLite database
    in ``tmp_path`` unless ``database_url`` is given (the API and the workers refuse an unmigrated one)."""
    suffix = uuid.uuid4().hex[:10]
    fields: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "images_topic": f"images-{suffix}",
        "dlq_topic": f"images-{suffix}.dlq",
        "callbacks_topic": f"images-{suffix}.callbacks",
        "topic_partitions": 3,
        "consumer_group": f"workers-{suffix}",
        "database_url": f"sqlite:///{tmp_path / 'jobs.db'}",
        "storage_dir": tmp_path / "blobs",
        "send_timeout_s": 3.0,
        "auth_disabled": True,  # tests of auth itself turn it on
        "retry_after_s": 2,
        "max_upload_bytes": 256 * 1024,
    }
    if "database_url" not in overrides:
        migrated_sqlite(tmp_path / "jobs.db")
    fields.update(overrides)
    return Settings.model_validate(fields)


def worker_test_settings(bootstrap_servers: str, tmp_path: Path, **overrides: object) -> Settings:
    """``make_settings`` for workers fed from the loopback image server: private URLs allowed, 8 jobs in flight,
    retries after 50 ms and commits every 200 ms so tests wait for the work, not the timers."""
    fields: dict[str, object] = {
        "allow_private_urls": True,
        "worker_concurrency": 8,
        "retry_backoff_s": 0.05,
        "commit_interval_s": 0.2,
    }
    fields.update(overrides)
    return make_settings(bootstrap_servers, tmp_path, **fields)
