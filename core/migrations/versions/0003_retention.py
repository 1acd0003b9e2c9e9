"""Retention: jobs remember when their files expired, expired jobs leave a tombstone, and one worker holds a lease.

``jobs.files_expired_at`` is set once the sweep deleted a finished job's files (``RESULT_TTL``); the index on
``(files_expired_at, finished_at)`` finds the next jobs whose files are due without walking those already swept.
``expired_jobs`` keeps the id and owner of each job whose row was deleted (``JOB_TTL``), so ``GET`` answers 410
rather than 404 and a replayed event does not bring the job back; it is pruned after ``TOMBSTONE_TTL``.
``processed_events`` gets an index on ``image_id``: the sweep deletes a job's processed-id rows with its row.
``leases`` holds the one row per lease that decides which worker sweeps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("files_expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_files_expired_at_finished_at", "jobs", ["files_expired_at", "finished_at"])
    op.create_index("ix_processed_events_image_id", "processed_events", ["image_id"])
    op.create_table(
        "expired_jobs",
        sa.Column("image_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(36), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_expired_jobs_expired_at", "expired_jobs", ["expired_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_expired_jobs_expired_at", table_name="expired_jobs")
    op.drop_table("expired_jobs")
    op.drop_index("ix_processed_events_image_id", table_name="processed_events")
    op.drop_index("ix_jobs_files_expired_at_finished_at", table_name="jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("files_expired_at")
