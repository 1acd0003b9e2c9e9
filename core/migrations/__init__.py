"""Schema migrations of the job database (Alembic): the environment, the revisions, and ``image-migrate``."""
