"""Runs each service's Alembic migrations (version table inside the service's schema).

    python -m zenthor.migrate --all          # provision roles/schemas, then migrate every service
    python -m zenthor.migrate identity       # one service
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from zenthor.config import ServiceName, Settings
from zenthor.db import sqlalchemy_url
from zenthor.provision import provision


def migrations_dir(service: ServiceName) -> Path | None:
    spec = importlib.util.find_spec(f"services.{service.value}")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "migrations"
    return folder if (folder / "env.py").exists() else None


def migrate(service: ServiceName, dsn: str, *, as_role: bool = True) -> bool:
    """Upgrades `service` to head. With `as_role`, an admin DSN runs as the service's role so
    the tables belong to it. False when the service has no migrations yet."""
    folder = migrations_dir(service)
    if folder is None:
        return False
    engine = create_engine(sqlalchemy_url(dsn))
    try:
        with engine.begin() as conn:
            if as_role:
                conn.execute(text(f'SET ROLE "{service.db_role}"'))
            conn.execute(text(f'SET search_path = "{service.value}", public'))
            config = Config()
            config.set_main_option("script_location", str(folder))
            config.attributes["connection"] = conn
            config.attributes["schema"] = service.value
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    return True


def run_env() -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    config = context.config
    conn = config.attributes["connection"]
    schema = config.attributes["schema"]
    context.configure(connection=conn, version_table_schema=schema, include_schemas=False)
    with context.begin_transaction():
        context.run_migrations()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zenthor.migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [s.value for s in ServiceName]
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help=f"services to migrate, of: {', '.join(names)} (default: every service)")
    parser.add_argument("--all", action="store_true", help="provision and migrate every service")
    parser.add_argument("--dsn", help="admin DSN (default: ZENTHOR_ADMIN_DATABASE_URL)")
    args = parser.parse_args(argv)
    dsn = args.dsn or Settings().admin_database_url
    if not dsn:
        parser.error("no admin DSN: pass --dsn or set ZENTHOR_ADMIN_DATABASE_URL")
    unknown = [s for s in args.services if s not in names]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    services = list(ServiceName) if args.all or not args.services else [ServiceName(s) for s in args.services]
    provision(dsn, services)
    for service in services:
        done = migrate(service, dsn)
        print(f"{service.value}: {'migrated' if done else 'no migrations yet'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
