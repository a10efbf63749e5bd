"""Alembic migrations; run them with ``genie db upgrade`` (``storage.migrate.upgrade``)."""
