"""Typed settings read from the environment: one loader for every process."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people paste from examples; a service key equal to one of these is refused at start.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "changethis", "secret", "xxx", "todo"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# OTEL_TRACES_EXPORTER values this image serves (zenthor/tracing.py); `otlp` is OTLP over
# HTTP/protobuf.
TRACE_EXPORTERS = frozenset({"otlp", "console", "none"})


class ServiceName(StrEnum):
    """The seven gRPC services; the value is the Python package, the Postgres schema and the
    suffix of the service's database role."""

    IDENTITY = "identity"
    MESSAGES = "messages"
    AGENT_QUEUE = "agent_queue"
    DELIVERY = "delivery"
    APPROVALS = "approvals"
    PLUGINS = "plugins"
    TODOIST = "todoist"

    @property
    def default_port(self) -> int:
        return DEFAULT_PORTS[self]

    @property
    def db_role(self) -> str:
        return f"zenthor_{self.value}"

    @property
    def proto_service(self) -> str:
        """The contract's service name (`AgentQueueService`), as in proto and generated stubs."""
        return "".join(part.capitalize() for part in self.value.split("_")) + "Service"


DEFAULT_PORTS: dict[ServiceName, int] = {
    ServiceName.IDENTITY: 50051,
    ServiceName.MESSAGES: 50052,
    ServiceName.AGENT_QUEUE: 50053,
    ServiceName.DELIVERY: 50054,
    ServiceName.APPROVALS: 50055,
    ServiceName.PLUGINS: 50056,
    ServiceName.TODOIST: 50057,
}


class Settings(BaseSettings):
    """Everything a process reads from its environment. Unknown variables are ignored."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # --- database (each service connects as its own role; see zenthor.provision) ---
    database_url: str | None = Field(default=None, validation_alias="ZENTHOR_DATABASE_URL")
    admin_database_url: str | None = Field(
        default=None, validation_alias="ZENTHOR_ADMIN_DATABASE_URL"
    )
    db_pool_size: int = Field(default=10, ge=1, validation_alias="ZENTHOR_DB_POOL_SIZE")
    # Server-side prepared statements on the hot paths (zenthor.db.DirectPool). Turn off behind a
    # PgBouncer in transaction mode, whose server connections change under a session.
    db_prepared_statements: bool = Field(default=True, validation_alias="ZENTHOR_DB_PREPARED_STATEMENTS")
    migrate_on_start: bool = Field(default=False, validation_alias="ZENTHOR_MIGRATE_ON_START")

    # --- gRPC server ---
    grpc_host: str = Field(default="127.0.0.1", validation_alias="ZENTHOR_GRPC_HOST")
    grpc_port: int | None = Field(default=None, validation_alias="ZENTHOR_GRPC_PORT")
    shutdown_grace_s: float = Field(default=10.0, ge=0, validation_alias="ZENTHOR_SHUTDOWN_GRACE_S")

    # --- auth ---
    service_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SERVICE_KEY", "AGENT_SECRET")
    )
    dev_insecure: bool = Field(default=False, validation_alias="ZENTHOR_DEV_INSECURE")
    clerk_jwt_issuer_domain: str | None = Field(
        default=None, validation_alias="CLERK_JWT_ISSUER_DOMAIN"
    )
    # A local http:// issuer (`make dev`'s, zenthor/devstack/issuer.py, which signs a token for
    # any email) is accepted only with this set, and only on a loopback address.
    dev_issuer: bool = Field(default=False, validation_alias="ZENTHOR_DEV_ISSUER")
    clerk_jwt_audience: str = Field(default="convex", validation_alias="CLERK_JWT_AUDIENCE")
    jwt_leeway_s: float = Field(default=10.0, ge=0, le=300, validation_alias="ZENTHOR_JWT_LEEWAY_S")
    principal_cache_ttl_s: float = Field(
        default=5.0, ge=0, validation_alias="ZENTHOR_PRINCIPAL_CACHE_TTL_S"
    )
    admin_email_allowlist: str = Field(default="", validation_alias="ADMIN_EMAIL_ALLOWLIST")

    # --- Clerk ---
    clerk_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="CLERK_WEBHOOK_SECRET"
    )
    clerk_secret_key: SecretStr | None = Field(default=None, validation_alias="CLERK_SECRET_KEY")
    clerk_api_url: str = Field(default="https://api.clerk.com/v1", validation_alias="CLERK_API_URL")

    # --- WhatsApp ---
    # The account whose egress sends what the backend itself queues (verification codes).
    whatsapp_account_id: str = Field(default="default", min_length=1, validation_alias="WHATSAPP_ACCOUNT_ID")

    # --- Todoist (services/todoist; docs/hardening.md #36 for the token key) ---
    # OAuth needs the three below; without them StartTodoistOAuth refuses before any write.
    todoist_client_id: str | None = Field(default=None, validation_alias="TODOIST_CLIENT_ID")
    todoist_client_secret: SecretStr | None = Field(default=None, validation_alias="TODOIST_CLIENT_SECRET")
    todoist_oauth_redirect_uri: str | None = Field(default=None, validation_alias="TODOIST_OAUTH_REDIRECT_URI")
    todoist_oauth_scope: str = Field(default="data:read_write", validation_alias="TODOIST_OAUTH_SCOPE")
    todoist_oauth_authorize_url: str = Field(
        default="https://todoist.com/oauth/authorize", validation_alias="TODOIST_OAUTH_AUTHORIZE_URL"
    )
    todoist_oauth_token_url: str = Field(
        default="https://todoist.com/oauth/access_token", validation_alias="TODOIST_OAUTH_TOKEN_URL"
    )
    todoist_api_base_url: str = Field(
        default="https://api.todoist.com/api/v1", validation_alias="TODOIST_API_BASE_URL"
    )
    # Fernet keys (urlsafe base64, 32 bytes) separated by commas: the first encrypts, every one
    # decrypts, so a new key is rotated in by putting it first (MultiFernet).
    todoist_token_key: SecretStr | None = Field(default=None, validation_alias="TODOIST_TOKEN_KEY")
    # Where the gateway's OAuth callback sends the browser afterwards (`?todoist=connected` or
    # `?todoist=error`); unset: it answers JSON.
    todoist_oauth_return_url: str | None = Field(default=None, validation_alias="TODOIST_OAUTH_RETURN_URL")
    todoist_http_timeout_s: float = Field(default=10.0, gt=0, le=120, validation_alias="TODOIST_HTTP_TIMEOUT_S")

    # --- Temporal ---
    temporal_address: str = Field(default="127.0.0.1:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_task_queue: str = Field(default="zenthor-ops", validation_alias="TEMPORAL_TASK_QUEUE")

    # --- completion webhooks (services/delivery, workflows/webhook_delivery.py, docs/webhooks.md) ---
    # Development only: endpoint URLs may be http:// and reach loopback/private addresses.
    webhooks_allow_private: bool = Field(default=False, validation_alias="ZENTHOR_WEBHOOKS_ALLOW_PRIVATE")
    # The retry schedule of one delivery (a Temporal retry policy): the first retry after the
    # initial interval, each next one 3x later up to the maximum interval, at most max attempts in
    # all. The defaults spread 13 attempts over about 23 hours; tests compress them.
    webhooks_retry_initial_s: float = Field(default=10.0, gt=0, validation_alias="ZENTHOR_WEBHOOKS_RETRY_INITIAL_S")
    webhooks_retry_max_interval_s: float = Field(
        default=14_400.0, gt=0, validation_alias="ZENTHOR_WEBHOOKS_RETRY_MAX_INTERVAL_S"
    )
    webhooks_max_attempts: int = Field(default=13, ge=1, le=50, validation_alias="ZENTHOR_WEBHOOKS_MAX_ATTEMPTS")
    # One POST's bound (connect, send, the receiver's answer).
    webhooks_timeout_s: float = Field(default=15.0, gt=0, le=60, validation_alias="ZENTHOR_WEBHOOKS_TIMEOUT_S")

    # --- peers (host:port) ---
    identity_addr: str = Field(default="127.0.0.1:50051", validation_alias="ZENTHOR_IDENTITY_ADDR")
    messages_addr: str = Field(default="127.0.0.1:50052", validation_alias="ZENTHOR_MESSAGES_ADDR")
    agent_queue_addr: str = Field(
        default="127.0.0.1:50053", validation_alias="ZENTHOR_AGENT_QUEUE_ADDR"
    )
    delivery_addr: str = Field(default="127.0.0.1:50054", validation_alias="ZENTHOR_DELIVERY_ADDR")
    approvals_addr: str = Field(
        default="127.0.0.1:50055", validation_alias="ZENTHOR_APPROVALS_ADDR"
    )
    plugins_addr: str = Field(default="127.0.0.1:50056", validation_alias="ZENTHOR_PLUGINS_ADDR")
    todoist_addr: str = Field(default="127.0.0.1:50057", validation_alias="ZENTHOR_TODOIST_ADDR")
    rpc_deadline_s: float = Field(default=5.0, gt=0, validation_alias="ZENTHOR_RPC_DEADLINE_S")

    # --- gateway ---
    gateway_host: str = Field(default="127.0.0.1", validation_alias="ZENTHOR_GATEWAY_HOST")
    gateway_port: int = Field(default=8080, validation_alias="ZENTHOR_GATEWAY_PORT")

    # --- rate limits (zenthor/ratelimit.py, docs/operations.md §9) ---
    # Token buckets kept in each server process: with N replicas of a service the effective limit
    # is N times these. A rate of 0 turns its limit off; all are off unless set.
    # Per user: messages sent (SendMessage), and Watch… streams opened, per minute; the burst is
    # how many may go at once after a quiet spell.
    rate_limit_sends_per_minute: float = Field(default=0.0, ge=0, validation_alias="ZENTHOR_RATE_LIMIT_SENDS_PER_MINUTE")
    rate_limit_sends_burst: int = Field(default=10, ge=1, validation_alias="ZENTHOR_RATE_LIMIT_SENDS_BURST")
    rate_limit_watch_streams_per_minute: float = Field(
        default=0.0, ge=0, validation_alias="ZENTHOR_RATE_LIMIT_WATCH_STREAMS_PER_MINUTE"
    )
    rate_limit_watch_streams_burst: int = Field(default=30, ge=1, validation_alias="ZENTHOR_RATE_LIMIT_WATCH_STREAMS_BURST")
    # Per service key: every call made with it, the agent runtime's and the services' own (outbox
    # relays, workflows). Size it for the runtime's peak, with headroom (docs/operations.md).
    rate_limit_service_calls_per_s: float = Field(
        default=0.0, ge=0, validation_alias="ZENTHOR_RATE_LIMIT_SERVICE_CALLS_PER_S"
    )
    rate_limit_service_burst: int = Field(default=1_000, ge=1, validation_alias="ZENTHOR_RATE_LIMIT_SERVICE_BURST")
    # Buckets kept per limit; idle ones (refilled to full, so forgetting them changes nothing) go first.
    rate_limit_max_callers: int = Field(default=100_000, ge=1, validation_alias="ZENTHOR_RATE_LIMIT_MAX_CALLERS")

    # --- logs ---
    log_format: str = Field(default="json", validation_alias="ZENTHOR_LOG_FORMAT")
    log_level: str = Field(default="INFO", validation_alias="ZENTHOR_LOG_LEVEL")

    # --- metrics (zenthor/metrics.py; docs/operations.md §8) ---
    # The process's Prometheus endpoint (GET /metrics) on its own port, apart from the gRPC and
    # HTTP ports it serves; unset: no endpoint, no domain-gauge queries. Every pod uses 9464 in
    # k8s; `make dev` gives each process a free port and prints it; 0 binds any free port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535, validation_alias="ZENTHOR_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", validation_alias="ZENTHOR_METRICS_HOST")
    # How often a service re-reads its domain gauges (queue depths, outbox backlog) from
    # Postgres: one bounded round of cheap queries per interval, never one per scrape.
    metrics_refresh_s: float = Field(default=15.0, gt=0, le=3600, validation_alias="ZENTHOR_METRICS_REFRESH_S")

    # --- traces and the LISTEN connection (zenthor/tracing.py, zenthor/notify.py; docs/operations.md) ---
    # Traces are off unless one of these turns them on: ZENTHOR_TRACING=1, OTEL_TRACES_EXPORTER
    # (`otlp`, `console`; `none` keeps spans and trace ids in the logs but exports nothing), or an
    # OTLP endpoint. OTEL_SDK_DISABLED=true or ZENTHOR_TRACING=0 keeps them off whatever else is set.
    tracing: bool | None = Field(default=None, validation_alias="ZENTHOR_TRACING")
    otel_traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    # The change feed's and the principal cache's LISTEN connections need a session of their own:
    # behind a PgBouncer in transaction mode, point this at Postgres directly (or at a session-mode
    # pool) and keep ZENTHOR_DATABASE_URL on the pooler. Unset: ZENTHOR_DATABASE_URL.
    database_listen_url: str | None = Field(default=None, validation_alias="ZENTHOR_DATABASE_LISTEN_URL")

    @field_validator("otel_traces_exporter", mode="after")
    @classmethod
    def _known_trace_exporter(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        name = value.strip().lower()
        if name not in TRACE_EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER={value}: this image knows {', '.join(sorted(TRACE_EXPORTERS))}")
        return name

    @property
    def trace_exporter(self) -> str | None:
        """The exporter traces go to, or None when tracing is off (the default)."""
        if self.otel_sdk_disabled or self.tracing is False:
            return None
        if self.otel_traces_exporter is not None:
            return self.otel_traces_exporter
        if self.otel_exporter_otlp_endpoint:
            return "otlp"
        return "console" if self.tracing else None

    @property
    def tracing_enabled(self) -> bool:
        return self.trace_exporter is not None

    @property
    def listen_url(self) -> str | None:
        """Where LISTEN connections go: a session, never a transaction-mode pool."""
        return self.database_listen_url or self.database_url

    @field_validator(
        "service_key", "clerk_webhook_secret", "clerk_secret_key", "todoist_client_secret", "todoist_token_key",
        mode="after",
    )
    @classmethod
    def _empty_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty AGENT_SECRET counts as unset, as in the original.
        if value is None or value.get_secret_value() == "":
            return None
        return value

    @field_validator("service_key", mode="after")
    @classmethod
    def _refuse_placeholder_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("SERVICE_KEY is a placeholder; set a real secret")
        return value

    @model_validator(mode="after")
    def _dev_issuer_only_in_dev_mode(self) -> Settings:
        issuer = self.clerk_jwt_issuer_domain
        if not issuer or issuer.startswith("https://"):
            return self
        if not self.dev_issuer:
            raise ValueError(
                f"CLERK_JWT_ISSUER_DOMAIN={issuer} is not https://: Clerk issuers are; a local dev "
                "issuer is accepted only with ZENTHOR_DEV_ISSUER=1 (`make dev` sets it)"
            )
        if urlsplit(issuer).hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"ZENTHOR_DEV_ISSUER=1 accepts only a loopback issuer, not {issuer}")
        return self

    @property
    def allowlisted_emails(self) -> frozenset[str]:
        """Split on commas, trim, lower-case, drop empties."""
        return frozenset(
            e.strip().lower() for e in self.admin_email_allowlist.split(",") if e.strip()
        )

    @property
    def jwks_url(self) -> str | None:
        if not self.clerk_jwt_issuer_domain:
            return None
        return f"{self.clerk_jwt_issuer_domain.rstrip('/')}/.well-known/jwks.json"

    def port_for(self, service: ServiceName) -> int:
        return self.grpc_port if self.grpc_port is not None else service.default_port

    def addr_for(self, service: ServiceName) -> str:
        value: str = getattr(self, f"{service.value}_addr")
        return value
