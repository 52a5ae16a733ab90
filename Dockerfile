# syntax=docker/dockerfile:1
# One image for every Zenthor process; the command picks which one (deploy/k8s runs them):
#   python -m services.<name>     one of the seven gRPC services
#   python -m gateway             the HTTP edge
#   python -m workflows           the Temporal worker
#   python -m zenthor.migrate --all   the migration Job
# Build: docker build -t ghcr.io/zenthor/backend:<tag> .   (deploy/k8s/README.md)
# Every Python dependency comes from uv.lock (--frozen: nothing is re-resolved at build time).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG UV_VERSION=0.13.9

# --- stubs: generate zenthor/gen from proto/ (needs the dev tools, which stay in this stage)
FROM ${PYTHON_IMAGE} AS stubs
ARG UV_VERSION
ENV UV_PROJECT_ENVIRONMENT=/opt/tools UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never PYTHONDONTWRITEBYTECODE=1
RUN pip install --no-cache-dir uv==${UV_VERSION}
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --extra dev
COPY proto/ proto/
COPY scripts/gen_proto.py scripts/gen_proto.py
COPY zenthor/ zenthor/
RUN /opt/tools/bin/python scripts/gen_proto.py

# --- runtime dependencies only (no dev or bench extras), exactly as locked
FROM ${PYTHON_IMAGE} AS deps
ARG UV_VERSION
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==${UV_VERSION}
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --no-dev

# --- the image: source under /app (run with `python -m`, cwd on sys.path), non-root
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY zenthor/ zenthor/
COPY services/ services/
COPY gateway/ gateway/
COPY workflows/ workflows/
COPY --from=stubs /src/zenthor/gen/ zenthor/gen/
# Byte-compiled at build time: the root filesystem is read-only in the cluster.
RUN python -m compileall -q zenthor services gateway workflows \
    && groupadd --system --gid 10001 zenthor \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent zenthor
USER 10001:10001
# The default process; every Deployment and the Job name their own command.
CMD ["python", "-m", "gateway"]
