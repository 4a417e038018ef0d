"""Alembic environment: owlkit always passes an open connection (see owlkit.store.catalog.upgrade)."""

from alembic import context

from owlkit.store.catalog import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
