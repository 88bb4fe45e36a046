"""Alembic environment of the state store.

Normally run by ``monitor.state.migrate`` with an open connection in
``config.attributes["connection"]``. For authoring a new revision with the alembic command
line, pass a database URL instead::

    alembic -c monitor/state/alembic.ini -x url=sqlite:///data/newsmon.db \
        revision --autogenerate -m "what changes"
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from monitor.state.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database URL: alembic -x url=... <command>")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

_connection = context.config.attributes.get("connection")
if _connection is None:
    run_from_command_line()
else:
    run_migrations(_connection)
