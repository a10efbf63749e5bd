"""Alembic migrations; run them with ``genie db upgrade`` (``migrations.apply.upgrade``)."""
