"""Everything the runtime reads from the environment, in one typed place."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    agent_queue_addr: str
    messages_addr: str
    approvals_addr: str
    delivery_addr: str
    service_key: str | None
    # Unique per process: the job lease, the WhatsApp lease and outbound claims are fenced by it.
    worker_id: str
    lease_s: float
    max_jobs: int
    chunk_delay_s: float
    model_url: str | None
    model_name: str
    model_api_key: str | None
    whatsapp: bool
    account_id: str
    phone: str
    account_lease_s: float
    data_dir: Path
    shutdown_grace_s: float

    @property
    def heartbeat_s(self) -> float:
        """Three heartbeats per lease: one lost call does not lose the lease."""
        return self.lease_s / 3

    @property
    def sink_path(self) -> Path:
        return self.data_dir / "whatsapp-sent.jsonl"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        e = dict(os.environ if env is None else env)
        account = e.get("WHATSAPP_ACCOUNT_ID", "default")
        return cls(
            agent_queue_addr=e.get("ZENTHOR_AGENT_QUEUE_ADDR", "127.0.0.1:50053"),
            messages_addr=e.get("ZENTHOR_MESSAGES_ADDR", "127.0.0.1:50052"),
            approvals_addr=e.get("ZENTHOR_APPROVALS_ADDR", "127.0.0.1:50055"),
            delivery_addr=e.get("ZENTHOR_DELIVERY_ADDR", "127.0.0.1:50054"),
            service_key=e.get("SERVICE_KEY") or e.get("AGENT_SECRET") or None,
            # Host and pid: in containers the pid alone is often 1 in every replica.
            worker_id=e.get("WORKER_ID") or f"runtime-{socket.gethostname()}-{os.getpid()}",
            lease_s=float(e.get("ZENTHOR_RUNTIME_LEASE_S", "60")),
            max_jobs=int(e.get("ZENTHOR_RUNTIME_MAX_JOBS", "4")),
            chunk_delay_s=float(e.get("ZENTHOR_RUNTIME_CHUNK_DELAY_S", "0.05")),
            model_url=e.get("ZENTHOR_MODEL_URL") or None,
            model_name=e.get("ZENTHOR_MODEL_NAME", "gpt-4o-mini"),
            model_api_key=e.get("ZENTHOR_MODEL_API_KEY") or None,
            whatsapp=e.get("ENABLE_WHATSAPP", "true").lower() != "false",
            account_id=account,
            phone=e.get("WHATSAPP_PHONE", account),
            account_lease_s=float(e.get("WHATSAPP_LEASE_TTL_S", "45")),
            data_dir=Path(e.get("ZENTHOR_RUNTIME_DATA_DIR", ".data")),
            shutdown_grace_s=float(e.get("ZENTHOR_RUNTIME_SHUTDOWN_GRACE_S", "5")),
        )
