"""`python -m services.delivery`: run the delivery gRPC service."""

from services.delivery.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.DELIVERY, build_server)
