"""Jobs remember where their event sat in Kafka, and the console can list them newest first.

``kafka_topic``/``kafka_partition``/``kafka_offset`` are the record a worker last started the job from (nullable:
rows written before this revision, and by the API before a worker picks the job up, have none; the record's key is
the image id, so it needs no column). The indexes serve the job listing's keyset pagination, newest first by
``(requested_at, image_id)``, with or without a status filter, and the chart of jobs finished per second.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch operations: plain ALTERs on PostgreSQL; on SQLite, ADD COLUMN needs no copy of the table either.
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("kafka_topic", sa.String(249), nullable=True))
        jobs.add_column(sa.Column("kafka_partition", sa.Integer, nullable=True))
        jobs.add_column(sa.Column("kafka_offset", sa.BigInteger, nullable=True))
    op.create_index("ix_jobs_requested_at_image_id", "jobs", ["requested_at", "image_id"])
    op.create_index("ix_jobs_status_requested_at", "jobs", ["status", "requested_at"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_status_requested_at", table_name="jobs")
    op.drop_index("ix_jobs_requested_at_image_id", table_name="jobs")
    # On SQLite dropping a column copies the table (batch mode does it); the rows are kept.
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("kafka_offset")
        jobs.drop_column("kafka_partition")
        jobs.drop_column("kafka_topic")
