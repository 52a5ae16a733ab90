"""`python -m services.plugins`: run the plugins gRPC service."""

from services.plugins.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.PLUGINS, build_server)
