"""Persistence only: models, engine/session factories and queries. Nothing here commits."""
