"""Alembic environment: always run with a connection handed in by watcher.store.migrate."""

from __future__ import annotations

from alembic import context

from watcher.crashpoints import crash_point
from watcher.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `watcher db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # A test may stop the process between two migrations (watcher/crashpoints.py).
    on_version_apply=lambda **_: crash_point("migrate.between_steps"),
)
with context.begin_transaction():
    context.run_migrations()
