"""Alembic environment: always handed a live connection by inbox.migrate."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import inbox.models  # noqa: F401  (registers the tables on the metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
