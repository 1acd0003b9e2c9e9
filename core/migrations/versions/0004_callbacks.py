"""Completion callbacks: the callback URL of a job, the signing secret of each API key, every POST attempt.

Existing keys get a random signing secret here, so every key can sign; its holder reads it with
``image-keys rotate-callback-secret NAME`` (which makes a new one), as the secret of a key made from now on is
shown once by ``image-keys create``.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

SECRET_PREFIX = "whsec_"  # noqa: S105 - core.api_keys.CALLBACK_SECRET_PREFIX, fixed here as this revision wrote it


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("callback_url", sa.Text, nullable=True))
    with op.batch_alter_table("api_keys") as api_keys:
        api_keys.add_column(sa.Column("callback_secret", sa.String(128), nullable=True))
    keys = sa.table("api_keys", sa.column("key_id", sa.String), sa.column("callback_secret", sa.String))
    connection = op.get_bind()
    for (key_id,) in connection.execute(sa.select(keys.c.key_id)).all():
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        connection.execute(keys.update().where(keys.c.key_id == key_id).values(callback_secret=secret))
    op.create_table(
        "callback_attempts",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("image_id", sa.String(36), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("delivered", sa.Boolean, nullable=False),
    )
    op.create_index("ix_callback_attempts_image_id", "callback_attempts", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_callback_attempts_image_id", table_name="callback_attempts")
    op.drop_table("callback_attempts")
    with op.batch_alter_table("api_keys") as api_keys:
        api_keys.drop_column("callback_secret")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("callback_url")
