"""The database tables: jobs, the ids of the events whose work is done, expired jobs, API keys and leases.

``processed_events`` gets an event's id in the same transaction that marks its job done (Kafka's "store progress
in the same place as the output"): a redelivered event is recognised by it and skipped.

These definitions are what the code reads and writes; the database gets them through the migrations in
``core/migrations/versions`` (``image-migrate``), and tests/test_migrations.py checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

jobs_table = Table(
    "jobs",
    metadata,
    Column("image_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("filter", String(32), nullable=False),
    Column("source_url", Text, nullable=True),
    Column("blob_key", String(512), nullable=True),
    Column("request_fingerprint", String(64), nullable=True),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    # How many times a worker started the job: above 1 when a worker died (or was cut off) mid-job and another
    # ran it again. Attempts count retries within one execution.
    Column("executions", Integer, nullable=False, default=0, server_default="0"),
    Column("error", Text, nullable=True),
    Column("result_key", String(512), nullable=True),
    Column("owner", String(36), nullable=True),  # the API key that submitted it (none with auth off)
    # The record a worker last started the job from (its key is the image id); none until a worker has.
    Column("kafka_topic", String(249), nullable=True),  # 249: Kafka's longest topic name
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    # When the retention sweep deleted the finished job's files (RESULT_TTL); the row stays until JOB_TTL.
    Column("files_expired_at", DateTime(timezone=True), nullable=True),
    Column("callback_url", Text, nullable=True),  # where to POST a signed callback once the job is done or failed
    # Listing newest first, keyset-paginated by (requested_at, image_id); with a status filter; jobs finished per
    # second (only finished jobs have finished_at).
    Index("ix_jobs_requested_at_image_id", "requested_at", "image_id"),
    Index("ix_jobs_status_requested_at", "status", "requested_at"),
    Index("ix_jobs_finished_at", "finished_at"),
    # The sweep's next jobs whose files are due, without walking the ones already swept.
    Index("ix_jobs_files_expired_at_finished_at", "files_expired_at", "finished_at"),
)

processed_events_table = Table(
    "processed_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("image_id", String(36), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Index("ix_processed_events_image_id", "image_id"),  # deleted with their job's row by the retention sweep
)

# A tombstone per job whose row the retention sweep deleted (JOB_TTL): GET answers 410 Gone, to its owner only, and
# a replayed event of the job is skipped. Pruned after TOMBSTONE_TTL.
expired_jobs_table = Table(
    "expired_jobs",
    metadata,
    Column("image_id", String(36), primary_key=True),
    Column("owner", String(36), nullable=True),
    Column("expired_at", DateTime(timezone=True), nullable=False),
    Index("ix_expired_jobs_expired_at", "expired_at"),
)

api_keys_table = Table(
    "api_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),  # the key itself is shown once, never stored
    Column("roles", String(64), nullable=False),  # comma-separated
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # Signs the key's completion callbacks (HMAC needs the secret itself, so it is stored as it is, unlike the key).
    Column("callback_secret", String(128), nullable=True),
)

# Every POST of a completion callback, delivered or not: what GET /images/{id} shows, and how the callback
# consumer knows a delivery is done (a redelivered record is skipped) or has used up its attempts.
callback_attempts_table = Table(
    "callback_attempts",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("attempt", Integer, primary_key=True),  # from 1, counted across redeliveries of the record
    Column("image_id", String(36), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer, nullable=True),  # none when no answer came
    Column("error", Text, nullable=True),
    Column("delivered", Boolean, nullable=False),
    Index("ix_callback_attempts_image_id", "image_id"),
)

# One row per lease (core/leases.py): who holds it and until when. The retention sweep runs only in its holder.
leases_table = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
