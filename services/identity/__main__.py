"""`python -m services.identity`: run the identity gRPC service."""

from services.identity.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.IDENTITY, build_server)
