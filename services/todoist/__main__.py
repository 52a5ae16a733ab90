"""`python -m services.todoist`: run the todoist gRPC service."""

from services.todoist.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.TODOIST, build_server)
