"""Running one service's migrations on a test database, as `zenthor.migrate` does at start-up
(as the service's role, in its schema), to a chosen revision."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.db import sqlalchemy_url
from zenthor.migrate import migrations_dir


def alembic(db: TestDatabase, service: ServiceName, action: str, revision: str) -> None:
    """`action` is "upgrade" or "downgrade"."""
    engine = sa.create_engine(sqlalchemy_url(db.admin_dsn()))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'SET ROLE "{service.db_role}"'))
            conn.execute(sa.text(f'SET search_path = "{service.value}", public'))
            config = Config()
            config.set_main_option("script_location", str(migrations_dir(service)))
            config.attributes["connection"] = conn
            config.attributes["schema"] = service.value
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()
