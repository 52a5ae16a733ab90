"""`python -m services.approvals`: run the approvals gRPC service."""

from services.approvals.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.APPROVALS, build_server)
