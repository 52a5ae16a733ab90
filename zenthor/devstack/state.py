"""What a `make dev` stack leaves in its data dir for the dev commands (`token`, `ask-approval`):
where its issuer, gateway and services listen, who its admins are, and its service key."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "dev-stack.json"
SERVICE_KEY_FILE = "dev-service-key"
WEBHOOK_SECRET_FILE = "dev-webhook-secret"
# `python -m zenthor.devstack` and its commands find the data dir here, else in ./.data.
DATA_DIR_ENV = "ZENTHOR_DEV_DATA_DIR"
# On the stack's admin allowlist beside ADMIN_EMAIL_ALLOWLIST, so `token --admin` always works.
DEV_ADMIN_EMAIL = "admin@example.com"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or ".data")


class StackNotFound(RuntimeError):
    """No stack has run with this data dir."""


def _secret(data_dir: Path, variable: str, file_name: str, new: str) -> str:
    """The variable's value, else one generated once into the data dir (owner-only)."""
    if os.environ.get(variable):
        return os.environ[variable]
    path = data_dir / file_name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(new)
    return path.read_text().strip()


def service_key(data_dir: Path) -> str:
    """SERVICE_KEY from the environment, else one generated once and kept in the data dir (the
    stack never runs open, docs/hardening.md #3)."""
    return _secret(data_dir, "SERVICE_KEY", SERVICE_KEY_FILE, secrets.token_urlsafe(24))


def webhook_secret(data_dir: Path) -> str:
    """CLERK_WEBHOOK_SECRET, else a svix-style one kept in the data dir, so /clerk/webhook
    verifies signatures locally as it does in production."""
    return _secret(data_dir, "CLERK_WEBHOOK_SECRET", WEBHOOK_SECRET_FILE,
                   "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())


@dataclass(frozen=True)
class StackState:
    issuer: str
    audience: str
    gateway: str
    # service name → host:port
    grpc: dict[str, str]
    admins: tuple[str, ...]
    # process name → its Prometheus endpoint (http://127.0.0.1:<free port>/metrics)
    metrics: dict[str, str] = field(default_factory=dict)

    def write(self, data_dir: Path) -> None:
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, data_dir: Path) -> StackState:
        path = data_dir / STATE_FILE
        if not path.exists():
            raise StackNotFound(
                f"no dev stack has run with data dir {data_dir} ({path} is missing): start it with `make dev`, "
                f"or point {DATA_DIR_ENV} / --data-dir at its data dir"
            )
        values = json.loads(path.read_text())
        return cls(
            issuer=values["issuer"],
            audience=values["audience"],
            gateway=values["gateway"],
            grpc=dict(values["grpc"]),
            admins=tuple(values["admins"]),
            metrics=dict(values.get("metrics", {})),
        )
